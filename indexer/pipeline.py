"""One indexing run, top to bottom: walk, plan, forget deleted files, decode in worker threads
while the model embeds the previous batch, commit each batch, write the indexes."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from indexer.audio import index_sounds
from indexer.changes import Candidate, plan
from indexer.decode import Decoded, decode_image, decode_text_corpus
from indexer.video import add_missing_soundtracks, index_videos
from indexer.walk import content_kind, walk
from retrieval.diskspace import SQLITE_MARGIN, is_disk_full, no_space_as_error
from retrieval.encoders import Encoder
from retrieval.errors import JrsearchError
from retrieval.library import FileRecord, Library
from retrieval.types import ItemStatus, MediaKind

TEXT_BATCH = 256


@dataclass
class IndexReport:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0  # files left for a later run (sound without an audio tower): see notes
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what a person should know (e.g. sound skipped: no tower)
    vector_bytes: int = 0  # float32 bytes of the vectors stored by this run (what the indexes grow by)

    def to_json(self) -> dict:
        return {"indexed": self.indexed, "unchanged": self.unchanged, "removed": self.removed,
                "skipped": self.skipped, "failed": [{"path": p, "error": e} for p, e in self.failed],
                "seconds": round(self.seconds, 3), "notes": self.notes}


class Progress:
    """What the pipeline tells its caller; the CLI draws it as a bar with rate and ETA."""

    def start(self, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


@dataclass
class IndexOptions:
    batch_size: int = 64
    workers: int = 2
    include_hidden: bool = False
    audio_model: Path | None = None  # an audio tower checkpoint for sound files and soundtracks
    video_fps: float = 1.0  # video frames sampled per second (plus scene changes)
    retry_failed: bool = False  # try files that failed before again, even if unchanged


def run_index(library: Library, encoder: Encoder, roots: list[Path], options: IndexOptions | None = None,
              progress: Progress | None = None) -> IndexReport:
    """Index `roots` into `library`. `encoder` may be a `LazyEncoder`: it is touched (and so loaded)
    only when some file needs embedding, so a re-run over unchanged files opens no model."""
    options = options or IndexOptions()
    progress = progress or Progress()
    started = time.perf_counter()
    for root in roots:
        if not root.exists():
            raise JrsearchError(f"{root} does not exist; pass a folder or file to index")
    report = IndexReport()
    with no_space_as_error(library.root, "indexing"):  # the steps below that know their size say it
        library.check_model(encoder.spec)  # the model itself loads only if something needs embedding
        library.load_indexes()
        found = [hit for root in roots for hit in walk(root, options.include_hidden, skip=library.root)]
        todo = plan(found, library.known_files(), roots, options.retry_failed)
        todo = add_missing_soundtracks(library, todo, found, options.audio_model)
        todo.todo = [replace(c, kind=content_kind(c.path, c.kind)) for c in todo.todo]
        report.unchanged = todo.unchanged
        try:
            report.removed = library.remove(todo.deleted)
            handled = [c for c in todo.todo if c.kind in KIND_HANDLERS]
            report.skipped = len(todo.todo) - len(handled)
            progress.start(len(handled))
            if handled and library.model() is None:
                library.adopt_model(encoder.spec, encoder.dim)
            for kind, handler in KIND_HANDLERS.items():
                batch = [c for c in handled if c.kind == kind]
                if batch:
                    handler(library, encoder, batch, options, report, progress)
        except BaseException:
            _save_indexes_after(library)  # also on Ctrl-C: the files then match every committed batch
            raise
        else:
            with no_space_as_error(library.root, "writing the search indexes", lambda: _index_bytes(library, report)):
                library.save_indexes()
        finally:
            report.seconds = time.perf_counter() - started
    return report


def _save_indexes_after(library: Library) -> None:
    """Save the indexes while an error is on its way out; a full disk then is the same story
    (the error in flight tells it, and the next open rebuilds the files from the store)."""
    try:
        library.save_indexes()
    except Exception as exc:
        if not is_disk_full(exc):
            raise


def _index_bytes(library: Library, report: IndexReport) -> int:
    """About what writing the index files takes: each is written whole beside the old one."""
    files = [library.index_path(kind.value) for kind in MediaKind]
    return sum(p.stat().st_size for p in files if p.exists()) + report.vector_bytes


def _index_images(library: Library, encoder: Encoder, todo: list[Candidate], options: IndexOptions,
                  report: IndexReport, progress: Progress) -> None:
    decode = lambda c: decode_image(c, encoder.preprocess, encoder.image_size)  # noqa: E731
    for batch in _batched(_decoded_in_order(decode, todo, options), options.batch_size):
        ok = [d for d in batch if d.payload is not None]
        if ok:
            for decoded, vector in zip(ok, encoder.encode_images([d.payload for d in ok])):
                decoded.vectors = vector.reshape(1, -1)
        _commit(library, batch, "image", report)
        progress.advance(len(batch))


def _index_texts(library: Library, encoder: Encoder, todo: list[Candidate], options: IndexOptions,
                 report: IndexReport, progress: Progress) -> None:
    for decoded in _decoded_in_order(decode_text_corpus, todo, options):
        if decoded.payload:
            texts = [t for _, t in decoded.payload]
            decoded.vectors = np.concatenate([encoder.encode_texts(texts[i:i + TEXT_BATCH])
                                              for i in range(0, len(texts), TEXT_BATCH)])
        _commit(library, [decoded], "text", report)
        progress.advance(1)


KIND_HANDLERS: dict[MediaKind, Callable[..., None]] = {
    MediaKind.IMAGE: _index_images,
    MediaKind.TEXT: _index_texts,
    MediaKind.VIDEO: index_videos,  # frames + soundtrack; see indexer/video.py for what a video stores
    MediaKind.AUDIO: index_sounds,
}


def _commit(library: Library, batch: list[Decoded], modality: str, report: IndexReport) -> None:
    """Store one batch in one transaction: embedded files, failures, and touched-but-same files."""
    records = []
    for d in batch:
        c = d.candidate
        if d.error is None and d.vectors is None:  # same bytes as stored: only the mtime moved
            library.touch(str(c.path), c.size, c.mtime_ns)
            report.unchanged += 1
            continue
        if d.error is not None:
            report.failed.append((str(c.path), d.error))
        else:
            report.indexed += 1
        records.append(FileRecord(
            path=str(c.path), kind=c.kind, size=c.size, mtime_ns=c.mtime_ns, content_hash=d.content_hash,
            status=ItemStatus.FAILED if d.error else ItemStatus.INDEXED, error=d.error,
            width=d.width, height=d.height, vectors=d.vectors, modality=modality,
            texts=d.payload if modality == "text" and d.error is None else [], **d.extra))
    if records:
        stored = sum(r.vectors.nbytes for r in records if r.vectors is not None)
        text = sum(len(t.encode()) for r in records for _, t in r.texts)
        need = 2 * (stored + text + 512 * len(records)) + SQLITE_MARGIN  # written to the WAL, then into the db
        with no_space_as_error(library.root, f"storing a batch of {len(records)} files", need):
            library.write(records)
        report.vector_bytes += stored


def _decoded_in_order(decode: Callable[[Candidate], Decoded], todo: list[Candidate],
                      options: IndexOptions) -> Iterator[Decoded]:
    """Decode on a thread pool with bounded look-ahead, yielding in input order."""
    lookahead = max(2 * options.batch_size, 4 * options.workers)
    with ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="decode") as pool:
        pending: deque[Future[Decoded]] = deque()
        try:
            for candidate in todo:
                pending.append(pool.submit(decode, candidate))
                if len(pending) >= lookahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _batched(items: Iterable[Decoded], size: int) -> Iterator[list[Decoded]]:
    batch: list[Decoded] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
