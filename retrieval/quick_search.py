"""A text query in a fresh process without torch, open_clip or SQLAlchemy's ORM.

`quick_text_search` gives what `SearchEngine(library).search(engine.embed_text(text), ...)`
gives (the same `SearchResult`s, ranking and one-per-item/text dedupe) using the exported text
tower (`retrieval/query_model.py`), stdlib sqlite3 opened read-only and the FAISS file. It
returns None whenever it cannot answer exactly as the normal path would: no library or model
row, no or a stale text-tower export, an index file behind its store, a SQLite or FAISS error.
The caller then takes the normal path, which rebuilds, loads or reports as usual.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Callable

from retrieval.hf_text_tower import load_query_tower
from retrieval.paths import DB_NAME
from retrieval.ranking import ranked_search
from retrieval.types import MediaKind, ModelSpec, SearchResult

_JOIN_SQL = """
SELECT v.id, v.item_id, v.text_id, v.start_s, v.end_s, i.path, i.kind, t.text, t.line
FROM vectors v JOIN items i ON v.item_id = i.id LEFT JOIN texts t ON v.text_id = t.id
WHERE v.id IN ({})"""


def quick_text_search(root: Path, text: str, kind: MediaKind = MediaKind.IMAGE, top_k: int = 10,
                      nprobe: int | None = None,
                      path_filter: Callable[[str], bool] | None = None) -> list[SearchResult] | None:
    """The results of a text query, or None where only the normal path can answer it."""
    db = root.expanduser() / DB_NAME
    if not text.strip() or not db.is_file():
        return None  # the normal path reports these
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as con:
            return _search(con, root.expanduser(), text, kind, top_k, nprobe, path_filter)
    except (sqlite3.Error, OSError, RuntimeError, ValueError):
        return None  # a damaged or half-written file: the normal path rebuilds or explains


def library_model_name(root: Path) -> str | None:
    """The name of the model that built the library at `root`, read without the ORM; None where unreadable."""
    db = root.expanduser() / DB_NAME
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as con:
            row = con.execute("SELECT model_name FROM manifest").fetchone()
    except (sqlite3.Error, OSError, ValueError):
        return None
    return row[0] if row else None


def _search(con: sqlite3.Connection, root: Path, text: str, kind: MediaKind, top_k: int, nprobe: int | None,
            path_filter: Callable[[str], bool] | None) -> list[SearchResult] | None:
    from retrieval.index import DEFAULT_NPROBE, VectorIndex

    manifest = con.execute("SELECT model_name, pretrained, dim FROM manifest").fetchone()
    if manifest is None:
        return None
    state = con.execute("SELECT factory, generation, built_generation, trained_on FROM index_state WHERE kind = ?",
                        (kind.value,)).fetchone()
    if state is None:
        return []
    factory, generation, built_generation, trained_on = state
    index_file = root / "index" / f"{kind.value}.faiss"
    if built_generation != generation or not factory or not index_file.is_file():
        return None  # the normal path rebuilds the index from the store
    tower = load_query_tower(root, ModelSpec(manifest[0], manifest[1]), int(manifest[2]))
    if tower is None:
        return None
    query = tower.encode_texts([text])
    index = VectorIndex.load(index_file, factory, nprobe or DEFAULT_NPROBE, trained_on=trained_on)

    def fetch_rows(vector_ids: list[int]) -> sqlite3.Cursor:
        return con.execute(_JOIN_SQL.format(",".join("?" * len(vector_ids))), vector_ids)

    return ranked_search(index, query, top_k, path_filter, fetch_rows)
