"""Folder and date filters on an INDEXDIR (`retrieval/cluster/filters.py`): resolved in the dataset's
parquet metadata before the search, equal to exact filtered search when few match, never short."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="the cluster extra is not installed: pip install -e '.[cluster]'")

from jrsearch.indexer.cluster.build import BuildOptions, build_single
from jrsearch.retrieval import filtered_search
from jrsearch.retrieval.cluster.dataset import DatasetPlan, DatasetWriter, EmbeddingDataset, item_id
from jrsearch.retrieval.cluster.search import ClusterService
from jrsearch.retrieval.encoders import TINY_TEST_MODEL
from jrsearch.retrieval.request import Filters, SearchRequest
from jrsearch.retrieval.service import UnsupportedQuery

SHARDS, PER, DIM = 2, 600, 64
DAY = 86_400
START = int(datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp())


def mtime_of(shard: int, i: int) -> int | None:
    return None if i % 50 == 7 else (START + ((shard * PER + i) % 365) * DAY) * 1_000_000_000  # a year; some unknown


@pytest.fixture(scope="module")
def indexdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EmbeddingDataset]:
    root = tmp_path_factory.mktemp("cluster-filters")
    rng = np.random.default_rng(8)
    writer = DatasetWriter(str(root / "vectors"), DatasetPlan(TINY_TEST_MODEL, DIM, SHARDS, PER, ["synthetic"],
                                                                SHARDS * PER))
    means = rng.standard_normal((40, DIM)).astype(np.float32)
    for s in range(SHARDS):
        x = means[rng.integers(0, 40, PER)] + 0.5 * rng.standard_normal((PER, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        writer.write_shard(s, x, {"image_path": [f"/data/{'a' if i % 3 else 'b'}{s}/{i}.jpg" for i in range(PER)],
                                  "caption": [None] * PER, "size": [1] * PER, "width": [8] * PER, "height": [8] * PER,
                                  "mtime_ns": [mtime_of(s, i) for i in range(PER)],
                                  "id": [item_id(s, i) for i in range(PER)]}, {"items": PER})
    build_single(str(root / "vectors"), root / "index", BuildOptions(factory="IVF16,PQ8"))  # lossy, like at scale
    return root / "index", EmbeddingDataset.open(str(root / "vectors"))


def exact(dataset: EmbeddingDataset, query: np.ndarray, keep, k: int) -> list[int]:
    """Brute force over the dataset's float16 rows: the k best global ids whose (shard, row) passes `keep`."""
    ids, scores = [], []
    for s in range(SHARDS):
        rows = [i for i in range(PER) if keep(s, i)]
        ids += [int(dataset.offsets[s]) + i for i in rows]
        scores += (np.asarray(dataset.vectors(s)[rows], np.float32) @ query).tolist()
    return [ids[i] for i in np.lexsort((ids, -np.asarray(scores)))[:k]]


def in_2020(after_day: int, before_day: int):
    lo, hi = (START + after_day * DAY) * 10**9, (START + before_day * DAY) * 10**9
    return lambda s, i: mtime_of(s, i) is not None and lo <= mtime_of(s, i) < hi  # type: ignore[operator]


def test_folder_and_date_filters_on_an_indexdir_equal_exact_search(indexdir, monkeypatch):
    root, dataset = indexdir
    service = ClusterService(root)
    queries = np.asarray(dataset.vectors(0)[:3], np.float32) + 0.05
    def dated(under: str | None, after_day: int, before_day: int | None = None) -> Filters:
        return dataclasses.replace(Filters.make(under), after=float(START + after_day * DAY),
                                   before=None if before_day is None else float(START + before_day * DAY))

    cases = [  # (filters, which (shard, row) pass)
        (Filters.make("/data/b1"), lambda s, i: s == 1 and i % 3 == 0),
        (dated(None, 100, 102), in_2020(100, 102)),
        (dated("/data/a0", 300), lambda s, i: s == 0 and i % 3 and in_2020(300, 10**5)(s, i)),
    ]
    try:
        for exact_max in (30_000, 10):  # exact over the dataset's rows; through the index, kept ids only
            monkeypatch.setattr(filtered_search, "EXACT_FILTER_MAX", exact_max)
            for filters, keep in cases:
                matching = sum(keep(s, i) for s in range(SHARDS) for i in range(PER))
                assert 0 < matching <= 200
                for query in queries:
                    found = service.search(query, SearchRequest(top_k=10, filters=filters))
                    want = exact(dataset, query, keep, 10)
                    assert len(found) == min(10, matching)
                    assert {r.vector_id for r in found} <= {int(dataset.offsets[s]) + i for s in range(SHARDS)
                                                             for i in range(PER) if keep(s, i)}
                    if exact_max > matching:
                        assert [r.vector_id for r in found] == want
        assert service.search(queries[0], SearchRequest(filters=Filters.make(None, after="2031"))).results == ()
        with pytest.raises(UnsupportedQuery, match="place or camera"):
            service.search(queries[0], SearchRequest(filters=Filters.make(None, near="43.4,11.8")))
    finally:
        service.close()
