"""Exact and near-duplicate files of one kind: a k-nearest-neighbour pass over the kind's index.

Every stored vector is searched against the index (in batches, `index.search`: the IVF probes and
exact re-ranking a query gets, never all pairs), neighbours at or above a cosine `threshold`
become edges between their items, and the connected components of that graph (scipy's union-find
style `connected_components`) are the groups. Exact copies have equal vectors (cosine 1), so
they are found by the same pass; a group is `exact` when all its files have one content hash.

DEFAULT_THRESHOLD: CLIP image embeddings of one picture resized, recompressed or lightly cropped
stay above ~0.95 cosine, while two different shots of one scene usually fall below ~0.93; 0.95
keeps the groups to copies of one picture rather than "similar photos". It is a knob
(`--threshold`): lower it to gather bursts of near-identical shots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jrsearch.retrieval.index import VectorIndex, VectorSource
from jrsearch.retrieval.paths import display_path
from jrsearch.retrieval.ranking import HASH_COLUMN, JOIN_CHUNK, RowFetcher

DEFAULT_THRESHOLD = 0.95
NEIGHBOURS = 10  # per vector: a group larger than this is still found, through chains of neighbours
SEARCH_BATCH = 1024  # vectors searched per index.search call (re-ranking gathers batch x depth rows)
# Copies lie far closer to each other than the neighbours a query looks for, so they fall in the
# same inverted lists: 4 probes (not a query's 32) keep recall of planted copies at 1M vectors
# (benchmarks/duplicates.py) for an eighth of the scan. Lossy codes (SQ8, PQ) are not re-ranked
# per query (a query's 100-1000 exact re-scores cost more than the scan): pairs within
# LOSSY_MARGIN of the threshold by their codes are re-scored exactly, pair by pair, afterwards.
NPROBE = 4
LOSSY_MARGIN = 0.05


@dataclass(frozen=True)
class Pair:
    """Two items and the cosine similarity of their closest vectors."""

    a: int
    b: int
    similarity: float


@dataclass(frozen=True)
class DuplicateGroup:
    """Files that are copies of one another: their paths (in path order) and the pairs that tied
    them together, as (path, path, similarity)."""

    paths: tuple[str, ...]
    pairs: tuple[tuple[str, str, float], ...]
    exact: bool  # every file has the same content hash

    def to_json(self) -> dict[str, Any]:
        return {"exact": self.exact, "paths": [display_path(p) for p in self.paths],
                "pairs": [{"a": display_path(a), "b": display_path(b), "similarity": round(s, 6)}
                          for a, b, s in self.pairs]}


def near_pairs(index: VectorIndex, batches: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float,
               k: int = NEIGHBOURS, nprobe: int = NPROBE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids a, ids b, similarities) of every vector pair a < b where one is among the other's `k`
    nearest neighbours with cosine >= `threshold`; `batches` yields (ids, vectors) of the vectors to pass."""
    found_a, found_b, found_s = [], [], []
    rescore = index.layout.lossy and index.source is not None
    floor = threshold - LOSSY_MARGIN if rescore else threshold
    for ids, vectors in batches:
        scores, neighbours = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k + 1,  # +1: itself
                                          nprobe=nprobe, rerank=0)
        own = np.repeat(ids[:, None], neighbours.shape[1], axis=1)
        keep = (scores >= floor) & (neighbours >= 0) & (neighbours != own)
        a, b = own[keep], neighbours[keep]
        found_a.append(np.minimum(a, b))
        found_b.append(np.maximum(a, b))
        found_s.append(scores[keep])
    if not found_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    a, b, s = np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_s)
    order = np.lexsort((-s, b, a))  # the best score of each pair first, then one row per pair
    a, b, s = a[order], b[order], s[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b, s = a[first], b[first], s[first]
    if rescore and index.source is not None:
        s = exact_similarities(index.source, a, b)
        live = s >= threshold
        a, b, s = a[live], b[live], s[live]
    return a, b, s


def exact_similarities(source: VectorSource, a: np.ndarray, b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Cosine similarity of vectors a[i] and b[i] as stored (NaN, then dropped, where one is gone)."""
    out = np.empty(len(a), np.float32)
    for start in range(0, len(a), chunk):
        ca, cb = a[start:start + chunk], b[start:start + chunk]
        unique, inverse = np.unique(np.concatenate([ca, cb]), return_inverse=True)
        rows = source.get(unique)
        out[start:start + chunk] = np.einsum("ij,ij->i", rows[inverse[:len(ca)]], rows[inverse[len(ca):]])
    return np.nan_to_num(out, nan=-np.inf)


def components(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """The connected components (two or more members) of the graph with edges a[i] - b[i]."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    if len(nodes) == 0:
        return []
    edges = coo_matrix((np.ones(len(a), np.int8), (inverse[:len(a)], inverse[len(a):])), shape=(len(nodes),) * 2)
    _, labels = connected_components(edges, directed=False)
    order = np.argsort(labels, kind="stable")
    groups = np.split(nodes[order], np.flatnonzero(np.diff(labels[order])) + 1)
    return [group for group in groups if len(group) > 1]


def item_pairs(a: np.ndarray, b: np.ndarray, s: np.ndarray, fetch_rows: RowFetcher) -> tuple[list[Pair], dict]:
    """Vector pairs -> pairs of distinct items (best similarity each), and the store rows (`HitRow`s
    or the like: item id, path, content hash) of every item in them, by item id."""
    ids = np.unique(np.concatenate([a, b])).tolist()
    row_of: dict[int, Sequence[Any]] = {}
    for start in range(0, len(ids), JOIN_CHUNK):
        for row in fetch_rows(ids[start:start + JOIN_CHUNK]):
            row_of[row[0]] = row
    best: dict[tuple[int, int], float] = {}
    for va, vb, sim in zip(a.tolist(), b.tolist(), s.tolist(), strict=True):
        if va not in row_of or vb not in row_of:
            continue  # deleted since the index was saved
        ia, ib = row_of[va][1], row_of[vb][1]
        if ia != ib:
            key = (min(ia, ib), max(ia, ib))
            best[key] = max(best.get(key, -1.0), sim)
    items = {row[1]: row for row in row_of.values()}
    return [Pair(ia, ib, sim) for (ia, ib), sim in best.items()], items


def find_duplicates(index: VectorIndex | None, source: VectorSource, fetch_rows: RowFetcher,
                    threshold: float = DEFAULT_THRESHOLD, k: int = NEIGHBOURS,
                    progress: Callable[[int], None] | None = None) -> list[DuplicateGroup]:
    """Groups of copies among the vectors of `source`, searched in `index`; `fetch_rows` gives
    each vector's store row (`Catalog.hits`); largest groups first, then by first path."""
    if index is None or index.ntotal == 0:
        return []

    def batches() -> Iterable[tuple[np.ndarray, np.ndarray]]:
        for ids, vectors in source.batches(SEARCH_BATCH):
            yield ids, vectors
            if progress is not None:
                progress(len(ids))

    a, b, s = near_pairs(index, batches(), threshold, k)
    pairs, rows = item_pairs(a, b, s, fetch_rows)
    if not pairs:
        return []
    groups = []
    for members in components(np.array([p.a for p in pairs]), np.array([p.b for p in pairs])):
        inside = set(members.tolist())
        paths = tuple(sorted(rows[i][5] for i in inside))
        hashes = {rows[i][HASH_COLUMN] for i in inside}
        tied = tuple(sorted((rows[p.a][5], rows[p.b][5], p.similarity) for p in pairs if p.a in inside))
        groups.append(DuplicateGroup(paths, tied, exact=len(hashes) == 1 and None not in hashes))
    return sorted(groups, key=lambda g: (-len(g.paths), g.paths))
