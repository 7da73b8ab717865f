"""Filters on an INDEXDIR, resolved to vector ids before the search.

The dataset's parquet metadata (one row per vector, `dataset.META_COLUMNS`) is read with pyarrow
(memory-mapped, only the columns a filter needs) and the filter evaluated there: `--under DIR` as
a prefix of `image_path`; `--after`/`--before` on `taken_ts` (the date taken, else the file's
modification time, as a library dates its files; a dataset embedded before it kept that: on
`mtime_ns`); `--camera` as a case-insensitive part of `camera` ("make model"); `--near` by the
library's own great-circle test (`filtered_search.within_radius`). Unknown fails. Then the library's
plan: few matching ids are scored exactly over their float16 rows in the dataset
(`filtered_search.exact_top`), many through the index with the ids outside the filter dropped,
asked deep enough for the selectivity (a filter keeping more than `filtered_search.exact_limit`
vectors keeps a large share, where that is exact enough), widened until min(k, matching) pass.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval import filtered_search
from jrsearch.retrieval.filtered_search import exact_top
from jrsearch.retrieval.ranking import RowFetcher, SearchableIndex, widening_search
from jrsearch.retrieval.request import Filters

if TYPE_CHECKING:
    from jrsearch.retrieval.cluster.dataset import EmbeddingDataset
    from jrsearch.retrieval.types import SearchResult

NS = 1_000_000_000


def matching_ids(dataset: EmbeddingDataset, filters: Filters) -> np.ndarray:
    """Sorted global vector ids whose metadata row passes the folder and metadata conditions."""
    import pyarrow.compute as pc

    prefix = None
    if filters.under is not None:
        prefix = filters.under if filters.under.endswith(os.sep) else filters.under + os.sep
    when, per_second = ("taken_ts", 1) if dataset.has_file_metadata else ("mtime_ns", NS)
    parts = []
    for shard in range(len(dataset.meta_files)):
        table = dataset.metadata_columns(shard, ("image_path", when, "camera", "latitude", "longitude"))
        tests = []
        if prefix is not None:
            tests.append(pc.starts_with(table["image_path"], prefix))
        if filters.after is not None:
            tests.append(pc.greater_equal(table[when], math.ceil(filters.after * per_second)))
        if filters.before is not None:
            tests.append(pc.less(table[when], math.ceil(filters.before * per_second)))
        if filters.camera is not None:
            tests.append(pc.match_substring(table["camera"], filters.camera, ignore_case=True))
        keep = np.ones(table.num_rows, dtype=bool)
        for test in tests:  # a null (unknown) fails
            keep &= np.asarray(pc.fill_null(test, False), dtype=bool)
        if filters.near is not None:
            lat, lon = (np.asarray(pc.fill_null(table[name], math.nan), dtype=np.float64)
                        for name in ("latitude", "longitude"))
            keep &= filtered_search.within_radius(lat, lon, filters.near)
        parts.append(np.flatnonzero(keep).astype(np.int64) + dataset.offsets[shard])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def dataset_rows(dataset: EmbeddingDataset) -> filtered_search.ExactRows:
    """`filtered_search.ExactRows` over the dataset's float16 shards (global ids, all live)."""
    def rows(ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = np.empty((len(ids), dataset.dim), np.float16)
        shard_of = np.searchsorted(dataset.offsets, ids, side="right") - 1
        for shard in np.unique(shard_of):
            where = shard_of == shard
            out[where] = dataset.vectors(int(shard))[ids[where] - dataset.offsets[shard]]
        return out

    return rows


def cluster_filtered_search(dataset: EmbeddingDataset, index: SearchableIndex, query: np.ndarray, top_k: int,
                            filters: Filters, fetch_rows: RowFetcher) -> list[SearchResult]:
    """An INDEXDIR's `ranking.ranked_search` for a folder or date filter (see the module's note)."""
    allowed = matching_ids(dataset, filters)
    m = len(allowed)
    if m == 0 or index.ntotal == 0:
        return []
    query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    if m <= filtered_search.exact_limit(index.ntotal):
        exact = dataset_rows(dataset)
        return widening_search(lambda k: exact_top(query, allowed, k, exact), m, top_k,
                               filters if filters.glob else None, fetch_rows)
    keep = np.zeros(max(index.ntotal, int(allowed[-1]) + 1), dtype=bool)
    keep[allowed] = True
    deeper = index.ntotal / m  # how much further down the unfiltered order k allowed hits lie

    def search(k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = index.search(query, min(index.ntotal, math.ceil(k * deeper * 2)))
        kept = (ids[0] >= 0) & keep[np.maximum(ids[0], 0)]
        return scores[:, kept][:, :k], ids[:, kept][:, :k]

    return widening_search(search, m, top_k, filters if filters.glob else None, fetch_rows)
