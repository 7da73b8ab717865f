"""Checksums of derived files: written with each file, checked when it is loaded.

    PATH.sum                 beside a single file (a FAISS index, slots.npz, an int8 ONNX export):
                             {"size": bytes, "crc32": CRC-32 of the bytes}
    FOLDER/checksums.json    inside a folder written whole (filter columns, the numpy text tower,
                             ONNX exports): {relative path: {"size", "crc32"}} of every other file

A cheap check compares sizes (one stat each); a full check reads the bytes. A file or folder
with no record (written before checksums) is UNKNOWN, which callers treat as sound: its record
comes with its next write. CRC-32 (zlib, stdlib) rather than blake2b: ~4x faster here, and
these detect damage, not tampering.
"""

from __future__ import annotations

import enum
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jrsearch.retrieval.fileio import read_json_object, write_atomic, write_folder_atomic, write_json_atomic

SIDECAR = ".sum"
FOLDER_SUMS = "checksums.json"
CHUNK = 1 << 20


class Verdict(str, enum.Enum):
    SOUND = "sound"
    DAMAGED = "damaged"
    UNKNOWN = "unknown"  # no checksum recorded (written before checksums)


@dataclass(frozen=True)
class FileCheck:
    path: Path
    verdict: Verdict
    reason: str = ""

    @property
    def damaged(self) -> bool:
        return self.verdict is Verdict.DAMAGED


def crc32_of(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def _record_of(path: Path) -> dict[str, int]:
    return {"size": path.stat().st_size, "crc32": crc32_of(path)}


def write_checked(path: Path, write: Callable[[Path], object], suffix: str = ".tmp") -> None:
    """`fileio.write_atomic`, then the file's checksum beside it (a crash between the two leaves a
    record that does not match: the file is then rebuilt, as derived files may be)."""
    write_atomic(path, write, suffix)
    write_json_atomic(sidecar(path), _record_of(path))


def write_folder_checked(target: Path, fill: Callable[[Path], object]) -> None:
    """`fileio.write_folder_atomic`, its checksums written inside it before the swap."""
    def fill_and_sum(tmp: Path) -> None:
        fill(tmp)
        records = {str(p.relative_to(tmp)): _record_of(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json_atomic(tmp / FOLDER_SUMS, records)

    write_folder_atomic(target, fill_and_sum)


def _compare(path: Path, record: object, full: bool) -> str:
    """'' where `path` matches `record`, else what is wrong."""
    if not isinstance(record, dict):
        return "its checksum record is unreadable"
    try:
        size = path.stat().st_size
    except OSError:
        return "it is missing"
    if size != record.get("size"):
        return f"it has {size} bytes, {record.get('size')} were written"
    if full and crc32_of(path) != record.get("crc32"):
        return "its bytes fail their checksum"
    return ""


def check_file(path: Path, full: bool = False) -> FileCheck:
    """`path` against its sidecar: sizes always, the CRC-32 when `full`."""
    side = sidecar(path)
    if not side.exists():
        return FileCheck(path, Verdict.UNKNOWN if path.exists() else Verdict.DAMAGED,
                         "" if path.exists() else "it is missing")
    reason = _compare(path, read_json_object(side) or None, full)
    return FileCheck(path, Verdict.DAMAGED if reason else Verdict.SOUND, reason)


def check_folder(folder: Path, full: bool = False) -> FileCheck:
    """Every file `folder/checksums.json` lists: sizes always, CRC-32s when `full`."""
    try:
        records = json.loads((folder / FOLDER_SUMS).read_text())
    except FileNotFoundError:
        return FileCheck(folder, Verdict.UNKNOWN)
    except (OSError, ValueError):
        return FileCheck(folder, Verdict.DAMAGED, f"{FOLDER_SUMS} is unreadable")
    if not isinstance(records, dict):
        return FileCheck(folder, Verdict.DAMAGED, f"{FOLDER_SUMS} is unreadable")
    for name, record in records.items():
        reason = _compare(folder / name, record, full)
        if reason:
            return FileCheck(folder / name, Verdict.DAMAGED, reason)
    return FileCheck(folder, Verdict.SOUND)
