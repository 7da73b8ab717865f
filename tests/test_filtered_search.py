"""Filter-aware search: metadata columns and filter masks, and the plan (exact / ID selector / fallback)
on real lossy indexes, against exact filtered search."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import clustered

from jrsearch.retrieval import filtered_search as filtered_search_module
from jrsearch.retrieval.filter_columns import exact_rows
from jrsearch.retrieval.filtered_search import (
    TAKEN_UNKNOWN,
    Allowed,
    ColumnFilter,
    MetadataColumns,
    column_plan,
    exact_cost,
    exact_limit,
    filtered_plan,
    filtered_search,
    mask,
    matching_ids,
    row_dtype,
    scaled_nprobe,
    scan_matching,
    select,
    selector_cost,
)
from jrsearch.retrieval.index import VectorIndex

N, DIM, K = 3000, 64, 10


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = clustered(N, DIM, 40)
    ids = np.arange(N, dtype=np.int64) * 3 + 7  # sparse ids, as after deletions
    queries = clustered(30, DIM, 40, seed=1)
    return vectors, ids, queries


@pytest.fixture(scope="module", params=["OPQ8,IVF32,PQ8", "IVF32_HNSW32,PQ8", "IDMap,Flat"])
def index(request: pytest.FixtureRequest, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> VectorIndex:
    vectors, ids, _ = data
    return VectorIndex.build(vectors, ids, DIM, factory=request.param, nprobe=4)


def exact_filtered(data: tuple[np.ndarray, np.ndarray, np.ndarray], allowed: np.ndarray, k: int) -> list[list[int]]:
    vectors, ids, queries = data
    rows = np.searchsorted(ids, allowed)
    scores = queries @ vectors[rows].T
    return [allowed[np.argsort(-row, kind="stable")[:k]].tolist() for row in scores]


def some_ids(data: tuple[np.ndarray, np.ndarray, np.ndarray], m: int, seed: int = 3) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(data[1], m, replace=False))


def test_few_matches_are_answered_exactly(index: VectorIndex, data: tuple) -> None:
    allowed = Allowed(some_ids(data, 25), int(data[1][-1]) + 1)
    want = exact_filtered(data, allowed.ids, K)
    for query, expected in zip(data[2], want, strict=True):
        scores, ids, plan = filtered_plan(index, query, allowed, K, exact_rows(index))
        assert plan.path == "exact" and ids[0].tolist() == expected
        assert np.all(np.diff(scores[0]) <= 0)


@pytest.mark.parametrize("m", [1200, 300])  # re-ranking 100 of them
def test_selector_path_recall_and_count(index: VectorIndex, data: tuple, m: int) -> None:
    allowed = Allowed(some_ids(data, m), int(data[1][-1]) + 1)
    want = exact_filtered(data, allowed.ids, K)
    recalls = []
    for query, expected in zip(data[2], want, strict=True):
        _, ids, plan = filtered_plan(index, query, allowed, K, exact_rows(index), rerank=100, exact_max=0)
        assert plan.path in ("ann", "ann+exact") and ids.shape == (1, K)
        assert set(ids[0].tolist()) <= set(allowed.ids.tolist())
        recalls.append(len(set(ids[0].tolist()) & set(expected)) / K)
    assert np.mean(recalls) >= 0.9


def test_lists_chosen_by_brute_force_answer_as_hnsw_chose_them(data: tuple) -> None:
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, DIM, factory="OPQ8,IVF32_HNSW32,PQ8", nprobe=4)
    kept = Allowed(some_ids(data, 1200), int(ids[-1]) + 1).selector()
    for probe in (3, 8, 32):  # a graph over 32 centroids finds the true nearest lists
        for query in queries[:10]:
            query = query.reshape(1, -1)
            want_scores, want_ids = index.index.search(
                query, 50, params=filtered_search_module.search_parameters(index, kept.selector, probe))
            scores, found = filtered_search_module._search_flat_assigned(index, query, kept.selector, 50, probe)
            assert found.tolist() == want_ids.tolist() and np.allclose(scores, want_scores, atol=1e-5)


def test_a_bitmap_of_few_ids_is_the_packed_bitmap() -> None:
    ids = np.sort(np.random.default_rng(0).choice(1_000_000, 500, replace=False)).astype(np.int64)
    kept = Allowed(ids, 1_000_000).selector()  # 500 of 1M: bits set one by one
    bits = np.zeros(1_000_000, bool)
    bits[ids] = True
    assert np.array_equal(kept.memory, np.packbits(bits, bitorder="little"))
    assert all(kept.selector.is_member(int(i)) == bits[i] for i in (*ids[:50], *(ids[:50] + 1), 0, 999_999))


def test_never_fewer_than_min_k_matching(index: VectorIndex, data: tuple) -> None:
    for m in (1, 3, 9):  # through the selector: an IVF scan at low nprobe finds too few, the plan widens
        allowed = some_ids(data, m, seed=m)  # a bare array: hash-set selector, no id bound
        want = exact_filtered(data, allowed, K)
        for query, expected in zip(data[2][:5], want[:5], strict=True):
            _, ids = filtered_search(index, query, allowed, K, exact_rows(index), nprobe=1, exact_max=0)
            assert ids.shape == (1, m) and sorted(ids[0].tolist()) == sorted(expected)


@pytest.mark.parametrize("chunk", [64, 8192])  # the float16 buffer reused across chunks, or one chunk
def test_float16_rows_score_like_float32(index: VectorIndex, data: tuple, chunk: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filtered_search_module, "EXACT_CHUNK", chunk)
    allowed = some_ids(data, 500)

    def half(ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:  # as the shards: into `out`
        rows = np.empty((len(ids), DIM), np.float16) if out is None else out
        rows[:] = index.source.get(ids)
        rows[ids == allowed[0]] = np.nan  # deleted since
        return rows

    for query in data[2][:5]:
        scores, ids = filtered_search(index, query, allowed, K, half)
        want, want_ids = filtered_search(index, query, allowed[1:], K, exact_rows(index))
        assert ids.tolist() == want_ids.tolist() and np.allclose(scores, want, atol=2e-3)


def test_match_nothing_answers_empty(index: VectorIndex, data: tuple) -> None:
    calls: list[int] = []

    def exact(ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        calls.append(len(ids))
        return index.source.get(ids)

    scores, ids, plan = filtered_plan(index, data[2][0], Allowed(np.zeros(0, np.int64), 99), K, exact)
    assert plan.path == "empty" and ids.shape == (1, 0) and scores.shape == (1, 0) and not calls


@pytest.mark.parametrize("keep", [1.0, 0.4])  # folders 0-4 of 5 and 0-1 of 5
def test_a_wide_filter_searches_unfiltered_and_tests_its_candidates(
        index: VectorIndex, data: tuple, keep: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filtered_search_module, "EXACT_FILTER_MAX", 100)  # as in an index too big to score them all
    _, ids, queries = data
    columns = MetadataColumns.build(ids, (np.arange(len(ids)) % 5).astype(np.int32))
    spec = ColumnFilter(rank_ranges=((0, round(5 * keep)),))
    allowed = Allowed.of(columns, spec)
    want = exact_filtered(data, allowed.ids, K)
    run, matching = column_plan(index, columns, spec, exact_rows(index))
    assert matching == pytest.approx(len(allowed.ids), rel=0.05)
    recalls, unfiltered = [], []  # the plan searches as the index does unfiltered: it keeps that recall
    everything = exact_filtered(data, ids, K)
    for query, expected, best in zip(queries, want, everything, strict=True):
        _, found, plan = run(query, K)
        assert plan.path == "wide" and found.shape == (1, K)
        assert set(found[0].tolist()) <= set(allowed.ids.tolist())
        recalls.append(len(set(found[0].tolist()) & set(expected)) / K)
        unfiltered.append(len(set(index.search(query.reshape(1, -1), K)[1][0].tolist()) & set(best)) / K)
    assert np.mean(recalls) >= min(0.9, np.mean(unfiltered) - 0.05)


def test_a_wide_filter_of_few_vectors_is_answered_exactly(index: VectorIndex, data: tuple) -> None:
    _, ids, queries = data  # 40% of 3,000: a share the wide plan takes, a count the exact path scores cheaply
    columns = MetadataColumns.build(ids, (np.arange(len(ids)) % 5).astype(np.int32))
    allowed = Allowed.of(columns, ColumnFilter(rank_ranges=((0, 2),)))
    run, matching = column_plan(index, columns, ColumnFilter(rank_ranges=((0, 2),)), exact_rows(index))
    assert matching == len(allowed.ids)
    for query, expected in zip(queries, exact_filtered(data, allowed.ids, K), strict=True):
        _, found, plan = run(query, K)
        assert plan.path == "exact" and found[0].tolist() == expected


def test_a_narrow_filter_is_resolved_to_its_ids(index: VectorIndex, data: tuple) -> None:
    _, ids, queries = data
    columns = MetadataColumns.build(ids, (np.arange(len(ids)) % 50).astype(np.int32))
    run, matching = column_plan(index, columns, ColumnFilter(rank_ranges=((3, 4),)), exact_rows(index))
    assert matching == len(ids) // 50 and run(queries[0], K)[2].path == "exact"


def test_unfiltered_is_the_index_search(index: VectorIndex, data: tuple) -> None:
    _, ids = filtered_search(index, data[2][0], None, K, exact_rows(index))
    assert ids.tolist() == index.search(data[2][:1], K)[1].tolist()


def test_deleted_vectors_are_dropped_on_the_exact_path(data: tuple) -> None:
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, DIM, factory="IDMap,Flat")
    gone = set(ids[:2000:2].tolist())

    def exact(wanted: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        rows = index.source.get(wanted)
        rows[np.isin(wanted, list(gone))] = np.nan
        return rows

    _, found = filtered_search(index, queries[0], ids[:2000], K, exact)
    assert found.shape == (1, K) and not set(found[0].tolist()) & gone


def test_nprobe_grows_as_the_filter_narrows() -> None:
    assert scaled_nprobe(32, 10_000_000, 10_000_000, 16384, scan=30_000) == 50  # ~30k matching vectors seen
    assert scaled_nprobe(32, 1_000_000, 1_000_000, 4096, scan=1000) == 32
    assert scaled_nprobe(32, 100_000, 1_000_000, 4096, scan=20_000) == 820
    # by default it passes 20k at 1M and fewer in a larger index: 3k at 10M
    assert scaled_nprobe(32, 60_000, 1_000_000, 4096) == 1366
    assert scaled_nprobe(32, 60_000, 10_000_000, 16384) == 820
    assert scan_matching(10_000_000) == 3000 and scan_matching(300_000) > 36_000 > scan_matching(1_000_000)
    assert scaled_nprobe(32, 1000, 1_000_000, 4096) == 4096
    assert scaled_nprobe(32, 10, 100, 0) == 0


def test_nprobe_sets_how_many_matching_vectors_the_selector_path_passes(
        data: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    assert scan_matching(1_000_000) == 20_000 and scan_matching(1_000_000, 8) == 5000
    assert scan_matching(1_000_000, 64) == 40_000
    assert exact_limit(1_000_000, 8) < exact_limit(1_000_000) < exact_limit(1_000_000, 64)  # a cheaper scan wins sooner
    vectors, ids, queries = data
    index = VectorIndex.build(vectors, ids, DIM, factory="OPQ8,IVF32,PQ8", nprobe=4)
    monkeypatch.setattr(filtered_search_module, "SCAN_MATCHING", 15)  # an index this small would probe every list
    allowed = Allowed(some_ids(data, 1200), int(ids[-1]) + 1)
    probed = {}
    for nprobe in (2, 4, 16):
        _, found, plan = filtered_plan(index, queries[0], allowed, K, exact_rows(index), nprobe=nprobe, exact_max=0)
        assert plan.path == "ann" and found.shape == (1, K)
        probed[nprobe] = plan.nprobe
    assert probed[2] < probed[4] < probed[16] < 32
    assert filtered_plan(index, queries[0], allowed, K, exact_rows(index), exact_max=0)[2].nprobe == probed[4]


def test_exact_limit_is_where_the_two_paths_cost_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    assert exact_limit(3000) == 3000  # a small index: every filter is answered exactly
    limits = {total: exact_limit(total) for total in (1_000_000, 10_000_000)}
    assert all(10_000 < limit < total // 10 for total, limit in limits.items())
    for total, limit in limits.items():
        assert exact_cost(limit, total) == pytest.approx(selector_cost(limit, total), rel=0.01)
        assert exact_cost(limit // 2, total) < selector_cost(limit // 2, total)
        assert exact_cost(limit * 2, total) > selector_cost(limit * 2, total)
    monkeypatch.setattr(filtered_search_module, "EXACT_FILTER_MAX", 5)
    assert exact_limit(10_000_000) == 5


# -- columns and masks ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def columns() -> MetadataColumns:
    rng = np.random.default_rng(5)
    n = 5000
    ids = rng.permutation(np.arange(n, dtype=np.int64) * 2 + 1)  # unsorted on purpose
    taken = rng.integers(1_500_000_000, 1_600_000_000, n)
    taken[::17] = TAKEN_UNKNOWN
    lat = rng.uniform(-89, 89, n).astype(np.float32)
    lon = rng.uniform(-180, 180, n).astype(np.float32)
    lat[::3] = np.nan
    lon[::3] = np.nan
    lat[:4], lon[:4] = [48.8566, 51.5074, 48.9, 0.0], [2.3522, -0.1278, 179.9, -179.95]  # Paris, London, ...
    camera = rng.integers(-1, 5, n).astype(np.int32)
    return MetadataColumns.build(ids, rng.permutation(n) // 2, taken, lat, lon, camera,
                                 ["a", "b", "c", "d", "e"])


def haversine(lat0: float, lon0: float, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    p0, p, dl = math.radians(lat0), np.radians(lat.astype(np.float64)), np.radians(lon.astype(np.float64) - lon0)
    h = np.sin((p - p0) / 2) ** 2 + math.cos(p0) * np.cos(p) * np.sin(dl / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(h))


def test_mask_of_each_filter_matches_a_reference(columns: MetadataColumns) -> None:
    c = columns
    known = c.taken != TAKEN_UNKNOWN
    paris_lat = float(np.float32(48.8566))
    cases = {
        ColumnFilter(rank_ranges=((10, 20),)): (c.path_rank >= 10) & (c.path_rank < 20),
        ColumnFilter(rank_ranges=((0, 5), (2000, 2400))):
            (c.path_rank < 5) | ((c.path_rank >= 2000) & (c.path_rank < 2400)),
        ColumnFilter(rank_ranges=((0, 2400),)): c.path_rank < 2400,  # a wide range: by comparison
        ColumnFilter(taken_range=(TAKEN_UNKNOWN, 1_550_000_000)): known & (c.taken < 1_550_000_000),
        ColumnFilter(cameras=(1, 3)): np.isin(c.camera, [1, 3]),
        ColumnFilter(cameras=()): np.zeros(len(c), bool),
        ColumnFilter(box=(0, 50, -10, 10)): (c.lat >= 0) & (c.lat <= 50) & (c.lon >= -10) & (c.lon <= 10),
        ColumnFilter(box=(-10, 10, 170, -170)): (np.abs(c.lat) <= 10) & ((c.lon >= 170) | (c.lon <= -170)),
        ColumnFilter(rank_ranges=((0, 1500),), taken_range=(1_520_000_000, 1_580_000_000), cameras=(0,)):
            (c.path_rank < 1500) & known & (c.taken >= 1_520_000_000) & (c.taken < 1_580_000_000) & (c.camera == 0),
        ColumnFilter(taken_range=(1_510_000_000, 1_600_000_000), cameras=(2,), box=(-50, 50, -180, 180)):
            known & (c.taken >= 1_510_000_000) & (c.camera == 2) & (np.abs(c.lat) <= 50),  # a wide range: masks
        ColumnFilter(rank_ranges=((0, 2400),), cameras=(4,)): (c.path_rank < 2400) & (c.camera == 4),  # by camera
        # a folder and dates: the dates read as slices of `taken_by_rank`, unknown dates left out
        ColumnFilter(rank_ranges=((10, 150),), taken_range=(1_520_000_000, 1_580_000_000)):
            (c.path_rank >= 10) & (c.path_rank < 150) & known & (c.taken >= 1_520_000_000) & (c.taken < 1_580_000_000),
        ColumnFilter(rank_ranges=((0, 40), (100, 160)), taken_range=(TAKEN_UNKNOWN, 1_560_000_000), cameras=(1,)):
            ((c.path_rank < 40) | ((c.path_rank >= 100) & (c.path_rank < 160))) & known
            & (c.taken < 1_560_000_000) & (c.camera == 1),
        ColumnFilter(cameras=(0, 1, 2, 3)): np.isin(c.camera, [0, 1, 2, 3]),  # many rows: by comparison
        ColumnFilter(box=(paris_lat, paris_lat, -180, 180)): c.lat == np.float32(48.8566),  # the bounds are inside
        ColumnFilter(box=(10, -10, -180, 180)): np.zeros(len(c), bool),
        ColumnFilter(): np.ones(len(c), bool),
    }
    for spec, want in cases.items():
        assert np.array_equal(mask(c, spec), want), spec
        assert np.array_equal(np.sort(select(c, spec, ordered=False)), np.flatnonzero(want)), spec


def test_near_uses_great_circle_distance(columns: MetadataColumns) -> None:
    c = columns
    paris = int(np.flatnonzero(c.lat == np.float32(48.8566))[0])
    london = int(np.flatnonzero(c.lat == np.float32(51.5074))[0])
    assert 340 < haversine(48.8566, 2.3522, c.lat[[london]], c.lon[[london]])[0] < 350
    near_350 = mask(c, ColumnFilter(near=(48.8566, 2.3522, 350.0)))
    near_300 = mask(c, ColumnFilter(near=(48.8566, 2.3522, 300.0)))
    assert near_350[paris] and near_350[london] and near_300[paris] and not near_300[london]
    for lat0, lon0, radius in ((48.8566, 2.3522, 2000.0), (0.0, 179.99, 500.0), (88.0, 10.0, 800.0)):
        with np.errstate(invalid="ignore"):
            want = haversine(lat0, lon0, c.lat, c.lon) <= radius  # NaN (unknown) compares False
        got = mask(c, ColumnFilter(near=(lat0, lon0, radius)))
        assert np.array_equal(got, want) and want.any()
    for near in ((0.0, 0.0, 5000.0), (48.8566, 2.3522, 800.0)):  # the camera's rows fewer, then the place's
        combined = mask(c, ColumnFilter(near=near, cameras=(2,), taken_range=(1_500_000_000, 1_590_000_000)))
        taken = (c.taken >= 1_500_000_000) & (c.taken < 1_590_000_000)
        want = mask(c, ColumnFilter(near=near)) & (c.camera == 2) & taken
        assert np.array_equal(combined, want) and want.any()
    boxed = mask(c, ColumnFilter(near=(48.8566, 2.3522, 2000.0), box=(40, 60, -5, 5)))
    near_paris = mask(c, ColumnFilter(near=(48.8566, 2.3522, 2000.0)))
    assert np.array_equal(boxed, near_paris & mask(c, ColumnFilter(box=(40, 60, -5, 5))))


def test_ids_without_gaps_are_rows_plus_the_first(columns: MetadataColumns) -> None:
    spec = ColumnFilter(rank_ranges=((100, 900),), cameras=(1, 2))
    rows = np.flatnonzero(mask(columns, spec))
    assert not columns.gapless and matching_ids(columns, spec).tolist() == columns.ids[rows].tolist()
    dense = MetadataColumns.build(np.arange(50, 50 + len(columns), dtype=np.int64)[::-1], columns.path_rank[::-1],
                                  camera=columns.camera[::-1])
    assert dense.gapless and matching_ids(dense, spec).tolist() == (rows + 50).tolist()


def test_columns_save_load_memory_mapped(columns: MetadataColumns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "columns"
    columns.save(folder)
    columns.save(folder)  # replaces
    loaded = MetadataColumns.load(folder)
    assert isinstance(loaded.ids, np.memmap) and isinstance(loaded.by_lat, np.memmap)
    assert loaded.by_rank is not None and loaded.by_rank.dtype == np.int32  # a row number fits: 4 bytes, not 8
    assert row_dtype(2**31) == np.int64
    assert loaded.cameras == columns.cameras
    assert np.all(np.diff(loaded.ids) > 0) and loaded.id_bound == int(columns.ids[-1]) + 1
    spec = ColumnFilter(rank_ranges=((100, 900),), cameras=loaded.camera_codes(["b", "zzz"]))
    assert np.array_equal(matching_ids(loaded, spec), matching_ids(columns, spec))
    with pytest.raises(ValueError):
        MetadataColumns(ids=np.array([2, 1]), path_rank=np.zeros(2, np.int32), taken=np.zeros(2, np.int64),
                        lat=np.zeros(2, np.float32), lon=np.zeros(2, np.float32), camera=np.zeros(2, np.int32))
