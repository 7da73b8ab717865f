"""Folder and date filters on an INDEXDIR, resolved to vector ids before the search.

The dataset's parquet metadata (one row per vector, `dataset.META_COLUMNS`) is read with pyarrow
(memory-mapped, only `image_path` and `mtime_ns`) and the filter evaluated there: `--under DIR` as a
prefix of `image_path`, `--after`/`--before` on `mtime_ns` (an INDEXDIR keeps no date taken: the
date of its files is their modification time; unknown fails). Then the library's plan: few matching
ids are scored exactly over their float16 rows in the dataset (`filtered_search.exact_top`), many
through the index with the ids outside the filter dropped, asked deep enough for the selectivity
(a filter keeping more than `filtered_search.exact_limit` vectors keeps a large share, where that is exact
enough), widened until min(k, matching) pass.
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
    """Sorted global vector ids whose metadata row passes the folder and date conditions."""
    import pyarrow.compute as pc

    prefix = None
    if filters.under is not None:
        prefix = filters.under if filters.under.endswith(os.sep) else filters.under + os.sep
    parts = []
    for shard in range(len(dataset.meta_files)):
        table = dataset.metadata_columns(shard, ("image_path", "mtime_ns"))
        tests = []
        if prefix is not None:
            tests.append(pc.starts_with(table["image_path"], prefix))
        if filters.after is not None:
            tests.append(pc.greater_equal(table["mtime_ns"], math.ceil(filters.after * NS)))
        if filters.before is not None:
            tests.append(pc.less(table["mtime_ns"], math.ceil(filters.before * NS)))
        keep = np.ones(table.num_rows, dtype=bool)
        for test in tests:  # a null (unknown time) fails
            keep &= np.asarray(pc.fill_null(test, False), dtype=bool)
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
