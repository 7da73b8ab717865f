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

import numpy as np

from retrieval.paths import DB_NAME
from retrieval.query_model import TextTower
from retrieval.types import MediaKind, ModelSpec, SearchResult

JOIN_CHUNK = 900  # ids per IN (...) list, under SQLite's bound-parameter limit

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
    tower = TextTower.load(root, ModelSpec(manifest[0], manifest[1]), int(manifest[2]))
    if tower is None:
        return None
    query = tower.encode_texts([text])
    index = VectorIndex.load(index_file, factory, nprobe or DEFAULT_NPROBE, trained_on=trained_on)
    if index.ntotal == 0:
        return []
    fetch = top_k if path_filter is None else max(top_k * 8, 256)  # as SearchEngine.search
    while True:
        scores, ids = index.search(query, fetch)
        results = _join(con, scores[0], ids[0], path_filter, top_k)
        if len(results) >= top_k or fetch >= index.ntotal:
            return results
        fetch = min(index.ntotal, fetch * 4)


def _join(con: sqlite3.Connection, scores: np.ndarray, ids: np.ndarray, path_filter: Callable[[str], bool] | None,
          top_k: int) -> list[SearchResult]:
    """Hits (faiss order) -> results: one per item/text, filtered, ids deleted since skipped."""
    hits = [(float(s), int(i)) for s, i in zip(scores, ids) if i >= 0]
    by_id = {}
    for start in range(0, len(hits), JOIN_CHUNK):
        chunk = [i for _, i in hits[start:start + JOIN_CHUNK]]
        for row in con.execute(_JOIN_SQL.format(",".join("?" * len(chunk))), chunk):
            by_id[row[0]] = row
    results: list[SearchResult] = []
    seen: set[tuple[int, int | None]] = set()
    for score, vid in hits:
        row = by_id.get(vid)
        if row is None or (path_filter and not path_filter(row[5])):
            continue
        _, item_id, text_id, start_s, end_s, path, item_kind, text, line = row
        if (item_id, text_id) in seen:
            continue
        seen.add((item_id, text_id))
        results.append(SearchResult(rank=len(results) + 1, score=score, item_id=item_id, vector_id=vid, path=path,
                                    kind=MediaKind(item_kind), text=text, line=line, start_s=start_s, end_s=end_s))
        if len(results) == top_k:
            break
    return results
