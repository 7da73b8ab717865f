"""Where a library lives on disk. Kept free of heavy imports: the cold query path reads it too."""

from __future__ import annotations

import os
from pathlib import Path

from jrsearch.retrieval.settings import LIBRARY

DB_NAME = "library.db"
VECTORS_DIR = "vectors"  # LIBRARY/vectors/KIND/*.f16, see retrieval/vectors.py
INDEX_DIR = "index"  # LIBRARY/index/KIND.faiss and KIND.slots.npz (where its vectors live, vectors.SlotRuns)


def index_path(root: Path, kind: str) -> Path:
    return root / INDEX_DIR / f"{kind}.faiss"


def slot_runs_path(root: Path, kind: str) -> Path:
    return root / INDEX_DIR / f"{kind}.slots.npz"


def columns_path(root: Path, kind: str) -> Path:
    """KIND's filter columns (`filter_columns.py`), saved with its index at the same generation."""
    return root / INDEX_DIR / f"{kind}.columns"


def default_library_dir() -> Path:
    """JRSEARCH_LIBRARY, else the user's data dir (platformdirs)."""
    env = LIBRARY.get()
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("jrsearch", appauthor=False) / "library"


def path_to_db(path: str) -> bytes:
    """How a path is stored: the file system's own bytes, so names that are not UTF-8 round-trip."""
    return os.fsencode(path)


def path_from_db(value: bytes | str) -> str:
    """A stored path as `str` (bytes that are not UTF-8 become surrogate escapes, as in os.listdir)."""
    return os.fsdecode(value)


def display_path(path: str) -> str:
    """A printable, JSON-safe form of a path: undecodable bytes shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
