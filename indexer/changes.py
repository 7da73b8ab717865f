"""Decide what a run must do: new and modified files to embed, unchanged ones to skip, deleted
ones to forget."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from jrsearch.retrieval.library import KnownFile
from jrsearch.retrieval.types import ItemStatus


@dataclass(frozen=True)
class Candidate:
    path: Path
    kind: str  # its kind's name
    size: int
    mtime_ns: int
    known: KnownFile | None  # the stored row, when the file was indexed before with other size/mtime


@dataclass
class Plan:
    todo: list[Candidate] = field(default_factory=list)
    unchanged: int = 0
    unchanged_files: dict[str, list[Path]] = field(default_factory=dict)  # by kind: what a handler may revisit
    deleted: list[str] = field(default_factory=list)


def plan(found: list[tuple[Path, str]], known: dict[str, KnownFile], roots: list[Path],
         retry_failed: bool = False) -> Plan:
    """Compare what is on disk with what is stored. Same size and mtime means unchanged (a file
    that failed stays failed unless `retry_failed`); otherwise the content hash decides later
    (`Candidate.known` carries the old hash)."""
    result = Plan()
    on_disk: set[str] = set()
    for path, kind in found:
        key = str(path)
        on_disk.add(key)
        try:
            stat = path.stat()
        except OSError:
            continue  # vanished between walk and stat: the next run sees it as deleted
        old = known.get(key)
        same = old is not None and old.size == stat.st_size and old.mtime_ns == stat.st_mtime_ns
        if old is not None and same and not (retry_failed and old.status == ItemStatus.FAILED):
            result.unchanged += 1
            result.unchanged_files.setdefault(kind, []).append(path)
            continue
        result.todo.append(Candidate(path, kind, stat.st_size, stat.st_mtime_ns, old))
    prefixes = [str(r) if Path(r).is_file() else os.path.join(str(r), "") for r in map(os.path.abspath, roots)]
    for key in known:
        if key not in on_disk and any(key == p or key.startswith(p) for p in prefixes) and not os.path.exists(key):
            result.deleted.append(key)
    return result


