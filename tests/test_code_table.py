"""The code table of a PQ index (codes by id): kept in step with the index through adds and removes,
saved and loaded beside it (never a table written for another version of the file), and the
filtered plan's code path against exact filtered search."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import clustered

from jrsearch.retrieval import filtered_search as filtered_search_module
from jrsearch.retrieval.checksums import write_checked
from jrsearch.retrieval.code_table import codes_path
from jrsearch.retrieval.filter_columns import exact_rows
from jrsearch.retrieval.filtered_search import Allowed, choose_path, exact_limit, filtered_plan
from jrsearch.retrieval.index import ArraySource, VectorIndex, _faiss

N, DIM, K = 3000, 64, 10
FACTORY = "OPQ8,IVF32,PQ8"


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = clustered(N, DIM, 40)
    ids = np.arange(N, dtype=np.int64) * 3 + 7  # sparse ids, as after deletions
    return vectors, ids, clustered(30, DIM, 40, seed=1)


@pytest.fixture(scope="module")
def index(data: tuple) -> VectorIndex:
    vectors, ids, _ = data
    return VectorIndex.build(vectors, ids, DIM, factory=FACTORY, nprobe=4)


def exact_filtered(data: tuple, allowed: np.ndarray, k: int) -> list[list[int]]:
    vectors, ids, queries = data
    scores = queries @ vectors[np.searchsorted(ids, allowed)].T
    return [allowed[np.argsort(-row, kind="stable")[:k]].tolist() for row in scores]


def adc_scores(index: VectorIndex, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Each id's code scored the slow way: decoded, then one inner product."""
    table = index.codes
    assert table is not None
    rows = np.searchsorted(table.ids, ids)
    decoded = table.quantizer.sa_decode(np.ascontiguousarray(table.codes[rows]))
    return decoded @ index.rotate(query.reshape(1, -1))[0]


def test_a_pq_index_keeps_every_vector_code_by_id(index: VectorIndex, data: tuple) -> None:
    table = index.codes
    assert table is not None and table.ids.tolist() == data[1].tolist()
    assert table.codes.shape == (N, 8) and table.codes.dtype == np.uint8
    assert VectorIndex.build(data[0][:600], data[1][:600], DIM, factory="IDMap,Flat").codes is None


def test_best_is_the_top_of_the_codes_scores(index: VectorIndex, data: tuple) -> None:
    _, ids, queries = data
    table = index.codes
    assert table is not None
    subset = np.random.default_rng(2).permutation(ids)[:700]  # unsorted, as a filter's ids may be
    unknown = np.array([10**9, 10**9 + 5], np.int64)  # ids the table does not hold: always kept
    for query in queries[:5]:
        best = table.best(index.rotate(query.reshape(1, -1)), np.concatenate([subset, unknown]), 50)
        assert set(unknown.tolist()) <= set(best.tolist()) and len(best) == 52
        scores = adc_scores(index, query, subset)
        threshold = np.sort(scores)[-50]
        chosen = np.isin(subset, best)
        assert chosen.sum() == 50 and scores[chosen].min() >= threshold - 1e-5


def test_codes_follow_adds_and_removes(data: tuple) -> None:
    vectors, ids, _ = data
    index = VectorIndex.build(vectors[:2000], ids[:2000], DIM, factory=FACTORY, nprobe=4)
    index.add(vectors[2000:], ids[2000:])
    index.remove(ids[:100])
    index.add(vectors[:50], ids[:50])  # ids below the others: merged in order
    table = index.codes
    assert table is not None
    want = np.sort(np.concatenate([ids[:50], ids[100:]]))
    assert table.ids.tolist() == want.tolist() and len(table) == index.ntotal
    for part in (slice(0, 50), slice(2000, 2010)):  # each row is the code of its own vector
        encoded = table.quantizer.sa_encode(index.rotate(vectors[part]))
        assert np.array_equal(table.codes[np.searchsorted(table.ids, ids[part])], encoded)


def test_the_table_is_saved_and_loaded_with_its_index(tmp_path, index: VectorIndex, data: tuple) -> None:
    path = tmp_path / "image.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, FACTORY, source=index.source)
    assert loaded._codes is None  # read on first use only
    assert loaded.codes is not None and np.array_equal(loaded.codes.codes, index.codes.codes)
    assert loaded.codes.ids.tolist() == data[1].tolist()


def test_a_table_written_for_another_version_of_the_file_is_not_loaded(tmp_path, index: VectorIndex) -> None:
    path = tmp_path / "image.faiss"
    index.save(path)
    kept = tmp_path / "old.codes"
    shutil.copytree(codes_path(path), kept)
    index.save(path)
    other = VectorIndex.build(np.eye(DIM, dtype=np.float32).repeat(50, 0)[:3000], np.arange(3000), DIM,
                              factory=FACTORY, nprobe=4)
    write_checked(path, lambda tmp: _faiss().write_index(other.index, str(tmp)))  # a crash before its table
    assert VectorIndex.load(path, FACTORY).codes is None
    shutil.rmtree(codes_path(path))
    shutil.copytree(kept, codes_path(path))
    assert VectorIndex.load(path, FACTORY).codes is None
    index.save(path)
    (codes_path(path) / "codes.npy").write_bytes(b"\x93NUMPY truncated")
    assert VectorIndex.load(path, FACTORY).codes is None


def test_an_index_saved_before_code_tables_gets_one(tmp_path, data: tuple) -> None:
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, DIM, factory=FACTORY, nprobe=4)
    path = tmp_path / "image.faiss"
    index.save(path)
    shutil.rmtree(codes_path(path))
    old = VectorIndex.load(path, FACTORY, source=ArraySource(ids, vectors))
    assert old.codes is None
    allowed = Allowed(ids[::3], int(ids[-1]) + 1)
    assert filtered_plan(old, queries[0], allowed, K, exact_rows(old))[2].path in ("exact", "ann")
    old.add_code_table(ArraySource(ids, vectors))
    assert old.codes is not None and old.codes.ids.tolist() == ids.tolist()


@pytest.mark.parametrize("m", [1200, 300])
def test_code_path_recall_and_count(index: VectorIndex, data: tuple, m: int,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filtered_search_module, "CODE_FILTER_MAX", N)
    chosen = np.random.default_rng(m).choice(data[1], m, replace=False)  # unsorted, as Allowed.of leaves them
    allowed = Allowed(chosen, int(data[1][-1]) + 1, ordered=False)
    want = exact_filtered(data, np.sort(chosen), K)
    recalls = []
    for query, expected in zip(data[2], want, strict=True):
        scores, ids, plan = filtered_plan(index, query, allowed, K, exact_rows(index), rerank=100)
        assert plan.path == "codes" and ids.shape == (1, K) and np.all(np.diff(scores[0]) <= 0)
        assert set(ids[0].tolist()) <= set(allowed.ids.tolist())
        recalls.append(len(set(ids[0].tolist()) & set(expected)) / K)
    assert np.mean(recalls) >= 0.9


def test_the_code_path_never_answers_short(index: VectorIndex, data: tuple,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filtered_search_module, "CODE_FILTER_MAX", N)
    _, ids, queries = data
    allowed = Allowed(ids[:500], int(ids[-1]) + 1)
    gone = set(ids[:500].tolist())

    def exact(wanted: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        rows = index.source.get(wanted)
        rows[np.isin(wanted, list(gone)[:-3])] = np.nan  # all but 3 deleted since the index was saved
        return rows

    _, found, plan = filtered_plan(index, queries[0], allowed, K, exact, rerank=20)
    assert plan.path == "codes+exact" and sorted(found[0].tolist()) == sorted(list(gone)[-3:])


def test_the_plan_goes_exact_then_codes_then_selector_as_more_match() -> None:
    total = 10_000_000
    for nprobe, depth in ((32, 1000), (8, 250)):
        paths = [choose_path(m, total, nprobe, depth, coded=True) for m in (100, 1000, 10_000, 50_000, 10**6)]
        assert paths[:2] == ["exact", "exact"] and paths[2] == "codes" and paths[-1] == "ann"
        assert paths == sorted(paths, key=["exact", "codes", "ann"].index)
    assert choose_path(10_000, total, 32, 1000, coded=False) == "exact"  # no table: as before
    assert choose_path(exact_limit(total) + 1, total, 32, 1000, coded=False) == "ann"
