"""Atomic file writes: a reader sees the old file or the new one, never half of one, even after a crash."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object], suffix: str = ".tmp") -> None:
    """Have `write` fill a temp file beside `path`, fsync it, rename it over `path`, fsync the folder.

    `write` gets the temp path (so np.save, faiss.write_index or a plain open all fit); the temp
    file is removed when anything fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)


TEMP_FILE = re.compile(r"^.+\.[a-z0-9_]{8}\.tmp$")  # write_atomic's temp: TARGET.XXXXXXXX.tmp (mkstemp)
TEMP_FOLDER = re.compile(r"^.+\.[a-z0-9_]{8}$")  # write_folder_atomic's: TARGET.XXXXXXXX (mkdtemp)


def remove_stale_temps(folder: Path, before: float) -> list[Path]:
    """Remove the temp files and folders `write_atomic` and `write_folder_atomic` left in `folder`
    (a killed save) last changed before `before` (a `time.time()`). For folders that only writers
    holding one lock write into, called by a writer holding it. What was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if not (TEMP_FOLDER if is_dir else TEMP_FILE).match(entry.name):
                continue
            if entry.stat(follow_symlinks=False).st_mtime >= before:
                continue
            if is_dir:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def write_folder_atomic(target: Path, fill: Callable[[Path], object]) -> None:
    """Have `fill` write a temp folder beside `target`, then swap it in for `target` and fsync the
    parent: a reader sees the whole old folder or the whole new one. The temp folder is removed when
    anything fails. (The swap is an rmtree then a rename, so a crash between them leaves no folder:
    fine for exports, which are rewritten when absent.)"""
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        fsync_folder(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: Path, value: object) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(value, indent=1)))


def read_json_object(path: Path) -> dict:
    """The JSON object in `path`, or {} where the file is missing, unreadable or holds something else."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def keep_json_entry(path: Path, key: str, value: object) -> None:
    """Set `key` in the JSON object in `path`, keeping its other entries. Best effort: where the file
    cannot be written (a read-only cache, a full disk) nothing is kept, and callers measure again."""
    kept = read_json_object(path)
    kept[key] = value
    with contextlib.suppress(OSError):
        write_json_atomic(path, kept)


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
