"""What every kind's decoder shares: its output (`Decoded`), reading and hashing a file, the
same-bytes shortcut, and decoding on worker threads in input order. A kind's own decoder lives
in its handler module (`indexer/images.py`, `texts.py`, `video.py`, `audio.py`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jrsearch.indexer.changes import Candidate
from jrsearch.retrieval.errors import FailureCode, MediaError
from jrsearch.retrieval.hashing import content_hash
from jrsearch.retrieval.media_metadata import MediaMetadata
from jrsearch.retrieval.types import ItemStatus


@dataclass
class Decoded:
    """One file after decoding (and, once the model ran, embedding); what its kind records."""

    candidate: Candidate
    content_hash: str | None = None
    failure: MediaError | None = None  # why the file could not be indexed
    payload: Any = None  # a preprocessed image (numpy), or for texts a list of (line, text)
    fields: dict[str, Any] = field(default_factory=dict)  # the kind's own per-file fields (width, duration_s, ...)
    vectors: Any = None  # (n, dim) float32, filled in by the model
    segments: list[tuple[float | None, float | None]] = field(default_factory=list)  # per vector row
    modalities: list[str] = field(default_factory=list)  # per vector row, when they differ
    metadata: MediaMetadata | None = None  # date taken, place, camera: read where the file is opened

    def fail(self, reason: str, code: FailureCode = FailureCode.UNDECODABLE) -> Decoded:
        """Mark the file failed (`reason` without the file's name, as stored); returns self."""
        self.failure = MediaError(self.candidate.path, reason, code)
        return self


def failed(candidate: Candidate, reason: str, code: FailureCode) -> Decoded:
    return Decoded(candidate).fail(reason, code)


def read_file(candidate: Candidate) -> tuple[bytes | None, Decoded]:
    """Read once, hash; an unchanged hash (a touched file) needs no decoding at all."""
    try:
        data = candidate.path.read_bytes()
    except OSError as exc:
        return None, failed(candidate, f"cannot read: {exc.strerror}", FailureCode.UNREADABLE)
    digest = content_hash(data)
    return data, Decoded(candidate, content_hash=digest)


def same_content(decoded: Decoded) -> bool:
    """The bytes are those already stored and indexed: only the file's mtime moved."""
    known = decoded.candidate.known
    return known is not None and known.status == ItemStatus.INDEXED and known.content_hash == decoded.content_hash


def decoded_in_order(decode: Callable[[Candidate], Decoded], todo: list[Candidate],
                     batch_size: int, workers: int) -> Iterator[Decoded]:
    """Decode on a thread pool with bounded look-ahead, yielding in input order."""
    lookahead = max(2 * batch_size, 4 * workers)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
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


def batched(items: Iterable[Decoded], size: int) -> Iterator[list[Decoded]]:
    batch: list[Decoded] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
