"""FAISS hits to ranked results, shared by `SearchEngine` and the cold query path.

Both paths fetch store rows with the same query (`catalog.Catalog.hits`: through the library's
pooled connection, or the cold path's own read-only one) and rank them here, identically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from jrsearch.retrieval.types import SearchResult

# What `fetch_rows(vector_ids)` returns per vector, in this order.
ROW_COLUMNS = ("vector_id", "item_id", "text_id", "start_s", "end_s", "path", "kind", "text", "line")
# optional, after ROW_COLUMNS (a library's rows)
EXTRA_COLUMNS = ("taken_at", "latitude", "longitude", "camera", "taken_source")
JOIN_CHUNK = 900  # ids per IN (...) list, under SQLite's bound-parameter limit

RowFetcher = Callable[[list[int]], Iterable[Sequence[Any]]]


class SearchableIndex(Protocol):
    """What ranking needs of an index: a library's `VectorIndex`, an INDEXDIR's shards."""

    @property
    def ntotal(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def ranked_search(index: SearchableIndex | None, query: np.ndarray, top_k: int,
                  path_filter: Callable[[str], bool] | None, fetch_rows: RowFetcher) -> list[SearchResult]:
    """Nearest vectors to one query, best first, one per item/text; with a filter, fetch more
    candidates until `top_k` pass or the whole index has been seen."""
    if index is None or index.ntotal == 0:
        return []
    return widening_search(lambda k: index.search(query.reshape(1, -1), k), index.ntotal, top_k, path_filter,
                           fetch_rows)


def widening_search(search: Callable[[int], tuple[np.ndarray, np.ndarray]], total: int, top_k: int,
                    path_filter: Callable[[str], bool] | None, fetch_rows: RowFetcher) -> list[SearchResult]:
    """Rank `search(k)`'s hits; while fewer than `top_k` results come out (a path filter, several
    vectors of one item) and fewer than `total` vectors were asked for, ask for 4x more."""
    fetch = top_k if not path_filter else max(top_k * 8, 256)
    while True:
        scores, ids = search(fetch)
        results = rank_hits(scores[0], ids[0], fetch_rows, path_filter, top_k)
        if len(results) >= top_k or fetch >= total:
            return results
        fetch = min(total, fetch * 4)


def rank_hits(scores: np.ndarray, ids: np.ndarray, fetch_rows: RowFetcher,
              path_filter: Callable[[str], bool] | None, top_k: int) -> list[SearchResult]:
    """Hits in faiss order -> results: filtered, one per item/text, ids deleted since skipped."""
    hits = [(float(s), int(i)) for s, i in zip(scores, ids, strict=True) if i >= 0]
    by_id: dict[int, Sequence[Any]] = {}
    for start in range(0, len(hits), JOIN_CHUNK):
        for fetched in fetch_rows([i for _, i in hits[start:start + JOIN_CHUNK]]):
            by_id[fetched[0]] = fetched
    results: list[SearchResult] = []
    seen: set[tuple[int, int | None]] = set()
    for score, vid in hits:
        row = by_id.get(vid)
        if row is None or (path_filter and not path_filter(row[5])):
            continue
        _, item_id, text_id, start_s, end_s, path, kind, text, line = row[:9]
        extra = dict(zip(EXTRA_COLUMNS, row[9:], strict=False))
        if (item_id, text_id) in seen:  # one result per image/video/audio file, per text
            continue
        seen.add((item_id, text_id))
        results.append(SearchResult(rank=len(results) + 1, score=score, item_id=item_id, vector_id=vid, path=path,
                                    kind=kind, text=text, line=line, start_s=start_s, end_s=end_s, **extra))
        if len(results) == top_k:
            break
    return results
