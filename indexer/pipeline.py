"""One indexing run, top to bottom: walk, plan, forget deleted files, decode in worker threads
while the model embeds the previous batch, commit each batch, write the indexes."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from jrsearch.indexer.changes import Plan, plan
from jrsearch.indexer.kinds import KIND_HANDLERS
from jrsearch.indexer.run import IndexOptions, IndexReport, IndexRun, NoProgress, Progress
from jrsearch.indexer.walk import LeftOut, content_kind, walk
from jrsearch.retrieval.diskspace import is_disk_full, no_space_as_error
from jrsearch.retrieval.encoders import Encoder
from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.library import KnownFile, Library
from jrsearch.retrieval.towers import LibraryTowers
from jrsearch.retrieval.walk_record import record_walk

__all__ = ["KIND_HANDLERS", "IndexOptions", "IndexReport", "Progress", "run_index"]


def run_index(library: Library, encoder: Encoder, roots: list[Path], options: IndexOptions | None = None,
              progress: Progress | None = None) -> IndexReport:
    """Index `roots` into `library`. `encoder` may be a `LazyEncoder`: it is touched (and so loaded)
    only when some file needs embedding, so a re-run over unchanged files opens no model."""
    options = options or IndexOptions()
    progress = progress or NoProgress()
    started = time.perf_counter()
    for root in roots:
        if not root.exists():
            raise JrsearchError(f"{root} does not exist; pass a folder or file to index")
    report = IndexReport()
    with no_space_as_error(library.root, "indexing"):  # the steps below that know their size say it
        library.check_model(encoder.spec)  # the model itself loads only if something needs embedding
        library.indexes.load_all()
        left_out = LeftOut()
        found = [hit for root in roots for hit in walk(root, options.include_hidden, library.root, roots, left_out)]
        record_walk(library.root, [str(r) for r in roots], left_out.all())
        known = library.known_files()
        todo = plan(found, known, roots, options.retry_failed)
        todo.deleted += _behind(left_out.outside, known)
        _note_left_out(report, left_out)
        run = IndexRun(library, encoder, options, report, progress,
                       LibraryTowers(library, lambda: encoder, options.audio_model))
        _add_revisits(run, todo)
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
                    handler.index(run, batch)
        except BaseException:
            _save_indexes_after(library)  # also on Ctrl-C: the files then match every committed batch
            raise
        else:
            with no_space_as_error(library.root, "writing the search indexes", lambda: _index_bytes(library, report)):
                library.save_indexes()
        finally:
            report.seconds = time.perf_counter() - started
    return report


def _behind(links: dict[str, str], known: dict[str, KnownFile]) -> list[str]:
    """Stored files now reached only through a symlink leading out of the roots (a file swapped for
    one, or files of a folder an earlier run followed): forgotten, as deleted files are."""
    under = tuple(os.path.join(link, "") for link in links)
    return [path for path in known if path in links or (under and path.startswith(under))]


def _note_left_out(report: IndexReport, left_out: LeftOut) -> None:
    for found, what in ((left_out.unreadable, "folder(s) could not be read"),
                        (left_out.outside, "symlink(s) lead outside the indexed folders")):
        if found:
            report.notes.append(f"{len(found)} {what} and were left out (`jrsearch status --failures` lists them)")


def _add_revisits(run: IndexRun, todo: Plan) -> None:
    """Queue the unchanged files each kind's handler wants indexed again (`KindHandler.revisit`)."""
    for kind, handler in KIND_HANDLERS.items():
        again = handler.revisit(run, todo.unchanged_files.get(kind, []))
        todo.todo += again
        todo.unchanged -= len(again)


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
    files = [library.indexes.path(kind) for kind in library.kinds()]
    return sum(p.stat().st_size for p in files if p.exists()) + report.vector_bytes
