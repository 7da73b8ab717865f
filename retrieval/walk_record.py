"""What the indexer's walks recorded beside the catalog (`LIBRARY/walk.json`): the folders indexed
(the roots the server confines files to) and what a walk left out with the reason (a symlink
leading outside the roots, a folder it could not read), listed by `status --failures`.

Not catalog rows: these are not items (nothing was read or embedded), and the record is
written whole by the writer holding the library's lock, read by the server per request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from jrsearch.retrieval.confine import is_under
from jrsearch.retrieval.fileio import read_json_object, write_json_atomic

WALK_RECORD_NAME = "walk.json"


@dataclass
class WalkRecord:
    roots: list[str] = field(default_factory=list)  # every folder or file indexed, as given (absolute)
    left_out: dict[str, str] = field(default_factory=dict)  # path -> why the walk left it out

    def failures(self) -> list[tuple[str, str]]:
        return sorted(self.left_out.items())


def walk_record_path(library_root: Path) -> Path:
    return library_root / WALK_RECORD_NAME


def read_walk_record(library_root: Path) -> WalkRecord:
    """The record, empty for a library indexed before walks were recorded (or a damaged file)."""
    data = read_json_object(walk_record_path(library_root))
    roots, left_out = data.get("roots"), data.get("left_out")
    return WalkRecord([r for r in roots if isinstance(r, str)] if isinstance(roots, list) else [],
                      {k: v for k, v in left_out.items() if isinstance(v, str)} if isinstance(left_out, dict) else {})


def record_walk(library_root: Path, roots: list[str], left_out: dict[str, str]) -> None:
    """Add `roots` and replace what earlier walks left out under them by `left_out` (other roots'
    entries stay). Called by the writer, under the library's lock."""
    record = read_walk_record(library_root)
    walked = [os.path.abspath(r) for r in roots]
    kept = {p: why for p, why in record.left_out.items() if not any(is_under(p, r) for r in walked)}
    record.roots = sorted(set(record.roots) | set(walked))
    record.left_out = {**kept, **left_out}
    write_json_atomic(walk_record_path(library_root), {"roots": record.roots, "left_out": record.left_out})


def recorded_roots(library_root: Path) -> list[str]:
    return read_walk_record(library_root).roots
