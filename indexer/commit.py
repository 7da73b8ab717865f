"""Storing what the handlers decoded: one batch, one transaction. Every kind handler commits
through `commit`, with its own function that turns a `Decoded` into its kind's record."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

import numpy as np

from jrsearch.indexer.decode import Decoded
from jrsearch.indexer.run import IndexRun
from jrsearch.retrieval.diskspace import SQLITE_MARGIN, no_space_as_error
from jrsearch.retrieval.errors import FailureCode
from jrsearch.retrieval.library import FileRecord, RowDetails
from jrsearch.retrieval.media_metadata import MediaMetadata
from jrsearch.retrieval.types import ItemStatus


class StoredFields(TypedDict):
    """The `FileRecord` fields every kind fills the same way (the kind's record adds its own)."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: ItemStatus
    error: str | None
    failure: FailureCode | None
    vectors: np.ndarray | None
    metadata: MediaMetadata | None


def stored_fields(decoded: Decoded) -> StoredFields:
    c, failure = decoded.candidate, decoded.failure
    return StoredFields(path=str(c.path), size=c.size, mtime_ns=c.mtime_ns, content_hash=decoded.content_hash,
                        status=ItemStatus.FAILED if failure else ItemStatus.INDEXED,
                        error=failure.reason if failure else None, failure=failure.code if failure else None,
                        vectors=decoded.vectors, metadata=decoded.metadata)


RecordOf = Callable[[Decoded], FileRecord]


def commit(run: IndexRun, batch: list[Decoded], record_of: RecordOf) -> None:
    """Store one batch in one transaction: embedded files, failures, and touched-but-same files."""
    library, report = run.library, run.report
    records = []
    for d in batch:
        c = d.candidate
        if d.failure is None and d.vectors is None:  # same bytes as stored: only the mtime moved
            library.touch(str(c.path), c.size, c.mtime_ns)
            report.unchanged += 1
            continue
        if d.failure is not None:
            report.failed.append((str(c.path), d.failure.reason))
        else:
            report.indexed += 1
            report.kinds[str(c.kind)] = report.kinds.get(str(c.kind), 0) + 1
        records.append(record_of(d))
        if d.failure is None and (texts := _texts(records[-1].row_details())):
            report.captions[str(c.path)] = len(texts)
    if records:
        stored = sum(r.vectors.nbytes for r in records if r.vectors is not None)
        text = sum(len(t.encode()) for r in records for _, t in _texts(r.row_details()))
        need = 2 * (stored + text + 512 * len(records)) + SQLITE_MARGIN  # written to the WAL, then into the db
        with no_space_as_error(library.root, f"storing a batch of {len(records)} files", need):
            library.write(records)
        report.vector_bytes += stored


def _texts(details: RowDetails | None) -> list[tuple[int, str]]:
    return details.texts if details else []
