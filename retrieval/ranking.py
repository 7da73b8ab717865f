"""FAISS hits to ranked results, shared by `SearchEngine` and the cold query path.

Both paths fetch store rows with the same query (`catalog.Catalog.hits`: through the library's
pooled connection, or the cold path's own read-only one) and rank them here, identically.

Exact copies (files with one content hash) are one result: the first copy ranked stands for
them, so `top_k` results are `top_k` distinct files, and once ranked it gets the others' paths
(`SearchResult.copies`) from one catalog read of those hashes (`fetch_copies`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from jrsearch.retrieval.types import SearchResult

# What `fetch_rows(vector_ids)` returns per vector, in this order.
ROW_COLUMNS = ("vector_id", "item_id", "text_id", "start_s", "end_s", "path", "kind", "text", "line")
# optional, after ROW_COLUMNS (a library's rows)
EXTRA_COLUMNS = ("taken_at", "latitude", "longitude", "camera", "taken_source")
HASH_COLUMN = len(ROW_COLUMNS) + len(EXTRA_COLUMNS)  # the item's content hash, where rows have one
JOIN_CHUNK = 900  # ids per IN (...) list, under SQLite's bound-parameter limit

RowFetcher = Callable[[list[int]], Iterable[Sequence[Any]]]
CopyFetcher = Callable[[list[str]], Mapping[str, Sequence[str]]]  # content hashes -> every indexed path of each


class SearchableIndex(Protocol):
    """What ranking needs of an index: a library's `VectorIndex`, an INDEXDIR's shards."""

    @property
    def ntotal(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def ranked_search(index: SearchableIndex | None, query: np.ndarray, top_k: int,
                  path_filter: Callable[[str], bool] | None, fetch_rows: RowFetcher,
                  fetch_copies: CopyFetcher | None = None) -> list[SearchResult]:
    """Nearest vectors to one query, best first, one per item/text (and per content, where
    `fetch_copies` is given); with a filter, fetch more candidates until `top_k` pass or the whole
    index has been seen."""
    if index is None or index.ntotal == 0:
        return []
    return widening_search(lambda k: index.search(query.reshape(1, -1), k), index.ntotal, top_k, path_filter,
                           fetch_rows, fetch_copies)


def widening_search(search: Callable[[int], tuple[np.ndarray, np.ndarray]], total: int, top_k: int,
                    path_filter: Callable[[str], bool] | None, fetch_rows: RowFetcher,
                    fetch_copies: CopyFetcher | None = None) -> list[SearchResult]:
    """Rank `search(k)`'s hits; while fewer than `top_k` results come out (a path filter, several
    vectors of one item, copies of one file) and fewer than `total` vectors were asked for, ask
    for 4x more."""
    fetch = top_k if not path_filter else max(top_k * 8, 256)
    while True:
        scores, ids = search(fetch)
        results = rank_hits(scores[0], ids[0], fetch_rows, path_filter, top_k, fetch_copies)
        if len(results) >= top_k or fetch >= total:
            return results
        fetch = min(total, fetch * 4)


def rank_hits(scores: np.ndarray, ids: np.ndarray, fetch_rows: RowFetcher,
              path_filter: Callable[[str], bool] | None, top_k: int,
              fetch_copies: CopyFetcher | None = None) -> list[SearchResult]:
    """Hits in faiss order -> results: filtered, one per item/text, ids deleted since skipped;
    with `fetch_copies`, one per content hash too, carrying the other copies' paths."""
    hits = [(float(s), int(i)) for s, i in zip(scores, ids, strict=True) if i >= 0]
    by_id: dict[int, Sequence[Any]] = {}
    for start in range(0, len(hits), JOIN_CHUNK):
        for fetched in fetch_rows([i for _, i in hits[start:start + JOIN_CHUNK]]):
            by_id[fetched[0]] = fetched
    results: list[SearchResult] = []
    hashes: list[str | None] = []
    seen: set[tuple[int | str, int | None]] = set()
    for score, vid in hits:
        row = by_id.get(vid)
        if row is None or (path_filter and not path_filter(row[5])):
            continue
        _, item_id, text_id, start_s, end_s, path, kind, text, line = row[:9]
        extra = dict(zip(EXTRA_COLUMNS, row[9:HASH_COLUMN], strict=False))
        content_hash = row[HASH_COLUMN] if fetch_copies and text_id is None and len(row) > HASH_COLUMN else None
        key = (content_hash or item_id, text_id)
        if key in seen:  # one result per image/video/audio file (and its copies), per text
            continue
        seen.add(key)
        hashes.append(content_hash)
        results.append(SearchResult(rank=len(results) + 1, score=score, item_id=item_id, vector_id=vid, path=path,
                                    kind=kind, text=text, line=line, start_s=start_s, end_s=end_s, **extra))
        if len(results) == top_k:
            break
    return with_copies(results, hashes, fetch_copies) if fetch_copies else results


def with_copies(results: list[SearchResult], hashes: list[str | None], fetch_copies: CopyFetcher) -> list[SearchResult]:
    """Each result with the paths of the other indexed files that have its content hash."""
    paths = fetch_copies(sorted({h for h in hashes if h}))
    return [dataclasses.replace(r, copies=tuple(p for p in paths[h] if p != r.path)) if h and h in paths else r
            for r, h in zip(results, hashes, strict=True)]
