"""Filter-aware vector search: resolve a metadata filter to vector ids first, then search among them.

Post-filtering an ANN answer (search k', drop what fails, widen) loses most of a selective
filter's true neighbours: the index's candidates are the unfiltered ones. Here the filter comes
first, as a set of allowed vector ids, and the plan depends on how many there are:

    none match                    empty answer at once
    m <= exact_limit(n)           exact: the m vectors read through `exact(ids)`, scored, top k
                                  (where the two paths' costs meet: ~35k at 1M, ~27k at 10M)
    more                          the faiss index with an ID selector (a bitmap over ids) and
                                  nprobe raised as the filter gets more selective, then the
                                  usual exact re-rank of the best `rerank` codes

An index with a code table (`VectorIndex.codes`: the PQ regime) has a third path between the two,
where the modelled costs say (`choose_path`): 'codes', the m ids' codes scored from the table
(64 bytes each, not a 1 KB float16 row) and the best `rerank` of them re-ranked exactly; exact
then only holds up to a few thousand.

and never fewer than min(k, m) results: an ANN answer short of that is retried with every list
probed, then answered exactly.

`MetadataColumns` are the numpy columns a filter is evaluated on (ids aligned with the index's
vector ids), saved as memory-mappable .npy files in a folder beside the index; `ColumnFilter` is a
filter spec and `select`/`mask` evaluate it without SQLite.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jrsearch.retrieval.checksums import write_folder_checked
from jrsearch.retrieval.faiss_import import code_storage, search_stored
from jrsearch.retrieval.index import DEFAULT_NPROBE, VectorIndex, _faiss

# Where the plan stops scoring matching vectors exactly and searches the index through a selector:
# where the two paths' modelled costs meet (`exact_limit`: ~35k at 1M, ~27k at 10M). The exact path
# costs EXACT_ROW_COST per matching row (gather a float16 row, score it), more in a larger set (its
# rows scattered over more memory: x (n / 1M)^EXACT_ROW_GROWTH). The selector path visits enough
# lists to pass `scan_matching(n)` matching vectors, n * scan / m codes at SCAN_CODE_COST each,
# scores those at MATCH_CODE_COST, and re-ranks (SELECTOR_FIXED_COST). Fitted to benchmarks/
# filtered.py on 2 Intel Xeon cores (AVX-512, one thread, p50, the filter resolved in the query):
# exact 0.26 us per row at 1M (30k: 7.9 ms), 0.53 at 10M (33.5k: 17.8 ms); the selector path 9.7 ms
# at 30k of 1M and 21.5 ms at 33.5k of 10M (so ~9-10 ns per code visited, bitmap and re-rank in);
# the two met at ~36k at 1M and ~38k at 10M with the scan of the time (6.3k at 10M); with 3k they
# meet at ~27k at 10M (25k: 12.0 / 13.0 ms, 30k: 14.7 / 11.1; filtered-10000000-1G-scan3000.json).
# EXACT_FILTER_MAX, when set, overrides the rule (tests force one path with it).
EXACT_ROW_COST = 0.26e-6
EXACT_ROW_GROWTH = 0.31
SCAN_CODE_COST = 10e-9
MATCH_CODE_COST = 0.13e-6
SELECTOR_FIXED_COST = 1e-3
# ... at 1M; in a larger set, x (n / 1M)^SELECTOR_FIXED_GROWTH (2.5 ms at 10M): a bitmap over every id,
# lists chosen among more centroids. Measured at 10M with --nprobe 8 --rerank 250, the selector path
# costs 3.6-4.4 ms from 30k to 200k matching, whatever it scans (filtered-crossover-10000000-1G-codes-fast.json).
SELECTOR_FIXED_GROWTH = 0.4
EXACT_FILTER_MAX: int | None = None
# The code path (`code_cost`): CODE_ROW_COST per matching id (gather its 64-byte code, score it:
# the same at 1M and 10M), RERANK_ROW_COST per re-ranked row, and CODE_FIXED_COST (the query's
# rotation, the scan's setup). Measured (benchmarks/filtered.py --crossover-only, one thread, p50,
# re-rank 250 / 1,000; filtered-crossover-*-codes-*.json): at 10M, 10k ids 1.05 / 1.86 ms, 50k 2.91 /
# 4.38; at 1M, 10k 0.74 / 1.26, 50k 2.24 / 3.01: ~45 ns an id, ~1.1 us a re-ranked row. The selector
# path costs less from ~70k / ~90k of 10M and ~50k / ~90k of 1M. CODE_FILTER_MAX, when set,
# overrides the limit (tests force the path with it).
CODE_ROW_COST = 45e-9
RERANK_ROW_COST = 1.08e-6
CODE_FIXED_COST = 0.32e-3
CODE_FILTER_MAX: int | None = None
EXACT_CHUNK = 8192  # rows scored at a time on the exact path: bounded RAM, cache-sized (measured: 65,536 is ~3x slower)
TAKEN_UNKNOWN = np.iinfo(np.int64).min  # `taken` sentinel: capture time unknown
EARTH_RADIUS_KM = 6371.0088
# The selector path probes enough lists to pass `scan_matching(n)` matching vectors on average:
# SCAN_MATCHING in an index of SCAN_REFERENCE vectors, scaled by (SCAN_REFERENCE / n)^SCAN_EXPONENT:
# 20k at 1M, 3k at 10M, 54k at 300k. Measured (benchmarks/
# filtered.py's clustered set, 10k centres, re-rank 1,000, 60 queries, recall@10 / p50 on 2 Xeon
# cores): 1M OPQ64,IVF4096,PQ64 at 30k matching 0.958 / 4.2 ms, 0.975 / 5.6, 0.977 / 8.2 passing
# 10k, 20k, 30k, at 50k 0.970, 0.992, 0.990; 10M OPQ64,IVF16384_HNSW32,PQ64 at 60k / 300k / 1M
# matching 0.965 / 0.963 / 0.950 passing 2.5k, 0.968 / 0.975 / 0.962 passing 5k, 0.972 / 0.983 /
# 0.975 passing 10k; 300k OPQ64,IVF2048,PQ64 at 50k 0.94 / 0.96 / 0.97 passing 20k / 29k / 50k.
# The needed share falls as the set grows (more vectors per neighbourhood). The whole 10M sweep at
# 3k (filtered-10000000-1G-scan3000.json): every selector row 0.961-0.985, p50 8-16 ms; at sqrt's
# 6.3k 0.970-0.993 and 15-24 ms (filtered-10000000-1G-default.json). A search asking for more
# or fewer lists than DEFAULT_NPROBE (`--nprobe`) passes as many times more or fewer (the same knob
# trades recall for speed filtered or not).
SCAN_MATCHING = 20_000
SCAN_REFERENCE = 1_000_000
SCAN_EXPONENT = math.log10(20_000 / 3_000)  # ~0.82: 20k at 1M, 3k at 10M
# A filter keeping at least WIDE_SHARE of the vectors is searched as if unfiltered, 1/share wider and
# deeper, its candidates tested on their own rows (`wide_plan`): resolving millions of ids and a
# bitmap over them cost more than the search. Measured at 10M (OPQ64,IVF16384_HNSW32,PQ64, 40
# queries, p50 wide / through the selector): folder AND date keeping 24.5% 13 / 45 ms, camera 35%
# 10.6 / 31.6 ms, 8.3% 32 / 36 ms, 1.7% 159 / 23 ms. WIDE_MARGIN: candidates asked for beyond
# depth/share, for the sampling error of `estimated_share` (SHARE_SAMPLE rows: +-0.9% at 10%).
WIDE_SHARE = 0.1
WIDE_MARGIN = 1.25
SHARE_SAMPLE = 4096
FLAT_ASSIGN_SHARE = 64  # probing more than 1/64 of an HNSW quantizer's lists: choose them by brute force
# A selector's bitmap over fewer than id_bound/BITMAP_SPARSE ids has their bits set one by one; more,
# a byte per id is packed (10M ids: 50k 0.4 vs 1.0 ms, 100k 0.8 vs 1.1, 1M 10.9 vs 1.8).
BITMAP_SPARSE = 64
# A range of a sorted order is listed as its rows, sorted (~6 ns a row), or as a mask by comparison
# over every row (~1.3-2 ns a row of n, listing it included): sorted up to n/RANGE_SORT_ALONE rows when
# it is the whole filter; with other conditions to test, up to n/RANGE_SORT_FRACTION, as gathering
# them at millions of rows costs more than comparing whole columns (10M, 2 Xeon cores: a camera
# keeping 834k 17 -> 5.8 ms sorted; a folder keeping 3M 12.7 ms as a mask, 30 sorted).
RANGE_SORT_FRACTION = 16
RANGE_SORT_ALONE = 5
COLUMNS = ("ids", "path_rank", "taken", "lat", "lon", "camera")
DERIVED = ("by_rank", "by_taken", "by_camera", "by_lat", "taken_by_rank")
DTYPES = {"ids": np.int64, "path_rank": np.int32, "taken": np.int64, "lat": np.float32, "lon": np.float32,
          "camera": np.int32}


def row_dtype(n: int) -> type[np.signedinteger]:
    """The dtype of the row orders of n rows: int32 where it holds every row (half the disk and page
    cache of int64: 16 bytes a vector less, 160 MB at 10M), int64 beyond."""
    return np.int32 if n <= np.iinfo(np.int32).max else np.int64


class ExactRows(Protocol):
    """ids (m,) int64 -> (m, d) rows, NaN rows for ids not live: float16 as stored (the fast way:
    written into `out`, an (m, d) float16 buffer, where given), or float32."""

    def __call__(self, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray: ...


# -- columns --------------------------------------------------------------------------------


@dataclass
class MetadataColumns:
    """Per-vector metadata, row i describing vector `ids[i]` (ids sorted ascending).

    path_rank: the item's rank in byte-sorted path order (a folder prefix is a contiguous range);
    taken: capture time, epoch seconds, TAKEN_UNKNOWN if unknown; lat/lon: degrees, NaN if unknown;
    camera: index into `cameras`, -1 if unknown. The rows in order of rank, time, camera and latitude
    are derived once (`by_rank`, `by_taken`, `by_camera`, and `by_lat`, which lists only the rows
    with a place), so each condition is a range of one of them found by binary searches, not a pass
    over n rows; and `taken_by_rank`, the dates in folder order, so a folder's dates are one slice
    (folder AND date is the usual pair: its dates are not read at scattered rows).
    """

    ids: np.ndarray
    path_rank: np.ndarray
    taken: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    camera: np.ndarray
    cameras: list[str] = field(default_factory=list)
    by_rank: np.ndarray | None = None
    by_taken: np.ndarray | None = None
    by_camera: np.ndarray | None = None
    by_lat: np.ndarray | None = None
    taken_by_rank: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in COLUMNS:
            column = getattr(self, name)
            if len(column) != n:
                raise ValueError(f"column {name} has {len(column)} rows, ids {n}")
        if n > 1 and not bool(np.all(self.ids[1:] > self.ids[:-1])):
            raise ValueError("ids must be sorted ascending and unique")
        rows = row_dtype(n)
        for order, values in (("by_rank", self.path_rank), ("by_taken", self.taken), ("by_camera", self.camera)):
            if getattr(self, order) is None:
                setattr(self, order, np.argsort(values, kind="stable").astype(rows))
        if self.by_lat is None:  # NaN (no place) sorts last and is left out
            placed = int(np.count_nonzero(~np.isnan(self.lat)))
            self.by_lat = np.argsort(self.lat, kind="stable")[:placed].astype(rows)
        if self.taken_by_rank is None:
            self.taken_by_rank = np.asarray(self.taken)[np.asarray(self.by_rank)]

    @functools.cached_property
    def places_by_lat(self) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) of the rows with a place in `by_lat` order, gathered once: a band of latitude
        is a slice of them, tested without reading the columns at scattered rows."""
        assert self.by_lat is not None
        order = np.asarray(self.by_lat)
        return np.asarray(self.lat[order]), np.asarray(self.lon[order])

    @functools.cached_property
    def places_unit(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`places_by_lat` as points on the unit sphere (x, y, z): a radius is then tested with no
        trigonometry per point (at 10M, 313k points: see `_within_km`)."""
        return _unit(*self.places_by_lat)

    @functools.cached_property
    def gapless(self) -> bool:
        """True when the ids are one run without gaps (no vector deleted): row i is id ids[0] + i, and
        a filter's ids need no gather (10M rows, 834k matching: 3.6-6.7 ms saved)."""
        return len(self.ids) == 0 or int(self.ids[-1]) - int(self.ids[0]) == len(self.ids) - 1

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def id_bound(self) -> int:
        """One more than the largest id: the size of an id bitmap."""
        return int(self.ids[-1]) + 1 if len(self.ids) else 0

    def camera_codes(self, names: Iterable[str]) -> tuple[int, ...]:
        """Codes of the named cameras that occur (unknown names match nothing)."""
        known = {name: code for code, name in enumerate(self.cameras)}
        return tuple(known[name] for name in names if name in known)

    def save(self, folder: Path, meta: dict[str, Any] | None = None) -> None:
        """Write every column as FOLDER/NAME.npy (+ cameras.json, and `meta` as meta.json where
        given: what its owner needs to know the folder by), replacing the folder whole."""
        def fill(tmp: Path) -> None:
            for name in (*COLUMNS, *DERIVED):
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
            (tmp / "cameras.json").write_text(json.dumps(self.cameras))
            if meta is not None:
                (tmp / "meta.json").write_text(json.dumps(meta))

        folder.parent.mkdir(parents=True, exist_ok=True)
        write_folder_checked(folder, fill)

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> MetadataColumns:
        """Open a saved folder, memory-mapped by default (pages are read as filters touch them)."""
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None)
                  for name in (*COLUMNS, *DERIVED)}
        cameras = json.loads((folder / "cameras.json").read_text())
        return cls(cameras=cameras, **arrays)

    @classmethod
    def build(cls, ids: np.ndarray, path_rank: np.ndarray, taken: np.ndarray | None = None,
              lat: np.ndarray | None = None, lon: np.ndarray | None = None, camera: np.ndarray | None = None,
              cameras: list[str] | None = None) -> MetadataColumns:
        """Columns from unsorted arrays (missing ones unknown), sorted by id and cast to their dtypes."""
        order = np.argsort(ids, kind="stable")
        n = len(ids)
        given = {"ids": ids, "path_rank": path_rank, "taken": taken, "lat": lat, "lon": lon, "camera": camera}
        unknown = {"taken": TAKEN_UNKNOWN, "lat": np.nan, "lon": np.nan, "camera": -1}
        arrays = {name: np.ascontiguousarray(
            (np.asarray(given[name]) if given[name] is not None else np.full(n, unknown[name]))[order],
            dtype=DTYPES[name]) for name in COLUMNS}
        return cls(cameras=list(cameras or []), **arrays)


# -- filters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnFilter:
    """What a query keeps; every given condition must hold (None: no condition). Unknown values fail.

    rank_ranges: [lo, hi) path-rank ranges, any of them (one per --under folder);
    taken_range: [start, end) epoch seconds; box: (lat_min, lat_max, lon_min, lon_max) degrees
    (lon_min > lon_max crosses the antimeridian); near: (lat, lon, radius_km), great-circle;
    cameras: camera codes, any of them.
    """

    rank_ranges: tuple[tuple[int, int], ...] | None = None
    taken_range: tuple[int, int] | None = None
    box: tuple[float, float, float, float] | None = None
    near: tuple[float, float, float] | None = None
    cameras: tuple[int, ...] | None = None

    @property
    def empty(self) -> bool:
        """True when the filter keeps everything (no condition)."""
        return all(value is None for value in (self.rank_ranges, self.taken_range, self.box, self.near, self.cameras))


def select(columns: MetadataColumns, spec: ColumnFilter, ordered: bool = True) -> np.ndarray:
    """Row positions (int64) of the rows that pass `spec`, ascending (`ordered` False: in any order,
    which saves sorting rows a bitmap does not need sorted: 834k of 10M, ~4 ms); ids are
    `columns.ids[rows]`.

    The condition whose range of a sorted order holds the fewest rows (`_range_rows`) gives them,
    and the other conditions are tested on those rows only. A range that holds many is a mask over
    every row, and so is each other condition, combined before the rows are listed once: gathering
    the other columns at millions of scattered rows costs more than comparing them whole (10M rows,
    folder AND date: ~110 ms gathered).
    """
    found, rest = _range_rows(columns, spec)
    if rest != ColumnFilter():
        if found is None:
            found = passes(columns, rest, slice(None))
        elif found.dtype == np.bool_:
            found &= passes(columns, rest, slice(None))
        else:
            found = found[passes(columns, rest, found)]
    if found is None:
        return np.arange(len(columns), dtype=np.int64)
    rows = np.flatnonzero(found) if found.dtype == np.bool_ else np.sort(found) if ordered else found
    return rows.astype(np.int64, copy=False)


def passes(columns: MetadataColumns, spec: ColumnFilter, rows: np.ndarray | slice) -> np.ndarray:
    """Boolean per row of `rows` (any order; `slice(None)`: every row): whether it passes `spec`,
    read at those rows only."""
    tests: list[np.ndarray] = []
    if spec.rank_ranges is not None:
        rank = columns.path_rank[rows]
        inside = np.zeros(len(rank), dtype=bool)
        for lo, hi in spec.rank_ranges:
            inside |= (rank >= lo) & (rank < hi)
        tests.append(inside)
    if spec.taken_range is not None:
        tests.append(_in_range(columns.taken[rows], spec.taken_range))
    if spec.cameras is not None:
        tests.append(_in_codes(columns.camera[rows], spec.cameras))
    if spec.box is not None or spec.near is not None:
        tests.append(_at_place(columns.lat[rows], columns.lon[rows], spec))
    if not tests:
        return np.ones(len(columns) if isinstance(rows, slice) else len(rows), dtype=bool)
    keep = tests[0]
    for test in tests[1:]:
        keep &= test
    return keep


def _at_place(lat: np.ndarray, lon: np.ndarray, spec: ColumnFilter,
              unit: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Whether each point is in `spec`'s box and within its radius (those it has): a radius tests
    the box around it first, the great circle only on what is in that box (on `unit`, the points
    on the unit sphere, where given; else they are computed)."""
    keep = np.ones(len(lat), dtype=bool)
    if spec.box is not None:
        keep &= _in_box(lat, lon, spec.box)
    if spec.near is not None:
        keep &= _in_box(lat, lon, _near_box(spec.near))
        everything = bool(keep.all())  # a box around a radius of thousands of km: nothing to set aside
        if unit is None:
            unit = _unit(lat, lon) if everything else _unit(lat[keep], lon[keep])
        elif not everything:
            unit = (unit[0][keep], unit[1][keep], unit[2][keep])
        if everything:
            keep = _within_km(unit, *spec.near)
        else:
            keep[keep] = _within_km(unit, *spec.near)
    return keep


def estimated_share(columns: MetadataColumns, spec: ColumnFilter) -> float:
    """The share of rows that pass `spec`, from SHARE_SAMPLE rows spread evenly over the columns."""
    n = len(columns)
    if n == 0:
        return 0.0
    sample = np.linspace(0, n - 1, min(n, SHARE_SAMPLE)).astype(np.int64)
    return float(np.mean(passes(columns, spec, sample)))


def mask(columns: MetadataColumns, spec: ColumnFilter) -> np.ndarray:
    """Boolean (n,) array, True where row i passes `spec`."""
    keep = np.zeros(len(columns), dtype=bool)
    keep[select(columns, spec, ordered=False)] = True
    return keep


def matching_ids(columns: MetadataColumns, spec: ColumnFilter, ordered: bool = True) -> np.ndarray:
    """Vector ids that pass `spec`, ascending (`ordered` False: in any order, see `select`)."""
    rows = select(columns, spec, ordered)
    if columns.gapless:
        return rows + (int(columns.ids[0]) if len(columns) else 0)
    return np.asarray(columns.ids[rows], dtype=np.int64)


def _range_rows(columns: MetadataColumns, spec: ColumnFilter) -> tuple[np.ndarray | None, ColumnFilter]:
    """The rows of the condition of `spec` that holds the fewest, each condition measured by binary
    searches in its sorted order (folder ranks, the time range, camera codes, a place's band of
    latitude): unique rows in any order when few (tested, then sorted, by `select`: sorting what
    passes costs less than sorting first, 5.8 -> 3.6 ms for 400k rows keeping 98k at 10M), a
    boolean mask over every row when many (see RANGE_SORT_ALONE); None when `spec` has no condition.
    Also the conditions those rows are still to be tested on (a place is tested whole: the band
    holds its rows and others)."""
    best: tuple[int, _Ranges, list[tuple[int, int]]] | None = None
    for ranges in _range_options(columns, spec):
        view = _SortedView(ranges.values, ranges.order)
        spans = [(view.bisect(lo), view.bisect(hi)) for lo, hi in ranges.bounds]
        count = sum(stop - start for start, stop in spans)
        if best is None or count < best[0]:
            best = count, ranges, spans
    if best is None:
        return None, spec
    count, ranges, spans = best
    if count * (RANGE_SORT_ALONE if ranges.rest == ColumnFilter() else RANGE_SORT_FRACTION) > len(columns):
        integer = np.issubdtype(ranges.values.dtype, np.integer)
        tests = [(ranges.values == lo) if integer and hi == lo + 1 else (ranges.values >= lo) & (ranges.values < hi)
                 for lo, hi in ranges.bounds]
        return functools.reduce(np.logical_or, tests), ranges.rest
    if ranges.order is columns.by_lat and spans:  # the place tested on its slice of `places_by_lat`
        (start, stop), = spans
        lat, lon = (values[start:stop] for values in columns.places_by_lat)
        x, y, z = columns.places_unit
        unit = x[start:stop], y[start:stop], z[start:stop]
        rows = np.asarray(ranges.order[start:stop])[_at_place(lat, lon, spec, unit)]
        return rows, replace(spec, box=None, near=None)
    parts = [np.asarray(ranges.order[start:stop]) for start, stop in spans]  # int32 to the end (`select`)
    rest = ranges.rest
    if ranges.order is columns.by_rank and rest.taken_range is not None:  # the folders' dates: slices
        assert columns.taken_by_rank is not None
        parts = [part[_in_range(columns.taken_by_rank[start:stop], rest.taken_range)]
                 for part, (start, stop) in zip(parts, spans, strict=True)]
        rest = replace(rest, taken_range=None)
    if len(parts) == 1:
        return parts[0], rest
    return (np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)), rest


@dataclass(frozen=True)
class _Ranges:
    """[lo, hi) ranges of one column's values, found through `order` (values[order] ascending), and
    what a row in them is still to be tested on."""

    values: np.ndarray
    order: np.ndarray
    bounds: tuple[tuple[float, float], ...]
    rest: ColumnFilter


def _range_options(columns: MetadataColumns, spec: ColumnFilter) -> list[_Ranges]:
    """Every condition of `spec` as ranges of a sorted order."""
    assert columns.by_rank is not None and columns.by_taken is not None
    assert columns.by_camera is not None and columns.by_lat is not None
    options = []
    if spec.rank_ranges is not None:
        options.append(_Ranges(columns.path_rank, columns.by_rank, tuple(spec.rank_ranges),
                               replace(spec, rank_ranges=None)))
    if spec.taken_range is not None:
        lo, hi = spec.taken_range
        options.append(_Ranges(columns.taken, columns.by_taken, ((max(lo, TAKEN_UNKNOWN + 1), hi),),
                               replace(spec, taken_range=None)))
    if spec.cameras is not None:
        options.append(_Ranges(columns.camera, columns.by_camera, tuple((code, code + 1) for code in spec.cameras),
                               replace(spec, cameras=None)))
    boxes = [box for box in (spec.box, _near_box(spec.near) if spec.near is not None else None) if box is not None]
    if boxes:
        south, north = max(box[0] for box in boxes), min(box[1] for box in boxes)
        lat = columns.lat.dtype.type  # in the column's precision, as `passes` compares (north included)
        options.append(_Ranges(columns.lat, columns.by_lat,
                               ((lat(south), np.nextafter(lat(north), lat(math.inf))),) if south <= north else (),
                               spec))
    return options


class _SortedView:
    """values[order] for binary search without materialising it (order may be memory-mapped)."""

    def __init__(self, values: np.ndarray, order: np.ndarray) -> None:
        self.values, self.order = values, order

    def bisect(self, target: float) -> int:
        """First position whose value is >= target."""
        lo, hi = 0, len(self.order)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.values[self.order[mid]] < target:
                lo = mid + 1
            else:
                hi = mid
        return lo


def _in_range(values: np.ndarray, bounds: tuple[int, int] | None) -> np.ndarray:
    assert bounds is not None
    return (values >= max(bounds[0], TAKEN_UNKNOWN + 1)) & (values < bounds[1])


def _in_codes(values: np.ndarray, codes: tuple[int, ...]) -> np.ndarray:
    """values in codes: one comparison per code for a few codes (np.isin sorts: ~10-30x slower)."""
    if len(codes) > 8:
        return np.isin(values, np.asarray(codes, dtype=values.dtype))
    keep = np.zeros(len(values), dtype=bool)
    for code in codes:
        keep |= values == code
    return keep


def _in_box(lat: np.ndarray, lon: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    lat_min, lat_max, lon_min, lon_max = box
    inside_lat = (lat >= lat_min) & (lat <= lat_max)
    if lon_min <= lon_max:
        return inside_lat & (lon >= lon_min) & (lon <= lon_max)
    return inside_lat & ((lon >= lon_min) | (lon <= lon_max))


def within_radius(lat: np.ndarray, lon: np.ndarray, near: tuple[float, float, float]) -> np.ndarray:
    """Whether each point (degrees; NaN: no place) is within `near`'s (lat, lon, radius_km): the test
    the columns' `near` condition makes, for metadata kept elsewhere (an INDEXDIR's parquet)."""
    return _at_place(np.asarray(lat, np.float32), np.asarray(lon, np.float32), ColumnFilter(near=near))


def _near_box(near: tuple[float, float, float]) -> tuple[float, float, float, float]:
    """A (lat_min, lat_max, lon_min, lon_max) box holding every point within radius_km of (lat, lon)."""
    lat0, lon0, radius = near
    dlat = math.degrees(radius / EARTH_RADIUS_KM)
    coslat = math.cos(math.radians(min(89.999, abs(lat0) + dlat)))
    dlon = 180.0 if abs(lat0) + dlat >= 90 else min(180.0, dlat / max(coslat, 1e-9))
    return (lat0 - dlat, lat0 + dlat, *_lon_window(lon0, dlon))


def _unit(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (degrees) on the unit sphere, float32 (x, y, z); NaN where there is no place."""
    phi, lam = np.radians(lat.astype(np.float32)), np.radians(lon.astype(np.float32))
    cos_phi = np.cos(phi)
    return cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)


def _within_km(unit: tuple[np.ndarray, np.ndarray, np.ndarray], lat0: float, lon0: float,
               radius: float) -> np.ndarray:
    """Whether each point (`_unit`) is within `radius` km of (lat0, lon0) on the great circle: the
    chord to it compared with the radius's chord, 2 sin(radius / 2R), the same test as the
    haversine's without its trigonometry per point; in float32, the columns' precision (about a
    metre off). At 10M, a 5,000 km radius (313k placed points in its band, 120k within): `select`
    1.1 ms on `places_unit`, 2.5 by the float32 haversine. NaN (no place) is never within."""
    x, y, z = unit
    qx, qy, qz = (float(v[0]) for v in _unit(np.array([lat0]), np.array([lon0])))
    chord = (x - np.float32(qx)) ** 2 + (y - np.float32(qy)) ** 2 + (z - np.float32(qz)) ** 2
    if radius >= math.pi * EARTH_RADIUS_KM:
        return ~np.isnan(chord)  # half the circumference or more: everywhere
    return chord <= 4 * math.sin(radius / (2 * EARTH_RADIUS_KM)) ** 2


def _lon_window(lon0: float, dlon: float) -> tuple[float, float]:
    """(lon_min, lon_max) around lon0, wrapped to [-180, 180] (min > max: crosses the antimeridian)."""
    if dlon >= 180.0:
        return -180.0, 180.0
    lo, hi = lon0 - dlon, lon0 + dlon
    return (lo + 360.0 if lo < -180.0 else lo), (hi - 360.0 if hi > 180.0 else hi)


# -- searching ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allowed:
    """The vector ids a search may return: unique int64 ids, ascending unless `ordered` is False, and
    an exclusive bound on every id in the index (for the bitmap; 0 if unknown: a hash-set selector
    is used instead). The exact path reads `sorted_ids` (rows read in order); the selector path's
    bitmap takes them in any order, so a filter's ids are sorted only when scored exactly."""

    ids: np.ndarray
    id_bound: int = 0
    ordered: bool = True

    @classmethod
    def of(cls, columns: MetadataColumns, spec: ColumnFilter) -> Allowed:
        return cls(matching_ids(columns, spec, ordered=False), columns.id_bound, ordered=False)

    @functools.cached_property
    def sorted_ids(self) -> np.ndarray:
        return self.ids if self.ordered else np.sort(self.ids)

    def selector(self) -> Any:
        """A faiss IDSelector over the ids: a bitmap when the bound is known and the ids lie below it."""
        faiss = _faiss()

        ids = np.ascontiguousarray(self.ids, dtype=np.int64)
        low, high = (int(ids[0]), int(ids[-1])) if self.ordered or not len(ids) else (int(ids.min()), int(ids.max()))
        if self.id_bound <= 0 or (len(ids) and (high >= self.id_bound or low < 0)):
            return _Kept(faiss.IDSelectorBatch(ids), ids)
        if len(ids) * BITMAP_SPARSE < self.id_bound:  # few: their bits set in place, not a byte per id packed
            bitmap = np.zeros((self.id_bound + 7) // 8, dtype=np.uint8)
            np.bitwise_or.at(bitmap, ids >> 3, np.left_shift(1, ids & 7).astype(np.uint8))
        else:
            bits = np.zeros(self.id_bound, dtype=bool)
            bits[ids] = True
            bitmap = np.packbits(bits, bitorder="little")
        return _Kept(faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap)


@dataclass
class _Kept:
    """A faiss selector and the array it points into (kept alive as long as the selector)."""

    selector: Any
    memory: np.ndarray


@dataclass(frozen=True)
class Plan:
    """How one filtered search ran: 'empty', 'exact', 'ann', 'ann+exact' (fallback), 'wide', 'unfiltered'."""

    path: str
    matching: int
    nprobe: int = 0


def column_plan(index: VectorIndex, columns: MetadataColumns, spec: ColumnFilter,
                exact: ExactRows) -> tuple[Callable[..., tuple[np.ndarray, np.ndarray, Plan]], int]:
    """How to search `index` (whose vectors are the rows of `columns`) under `spec`: a function of
    (query, k, nprobe=None, rerank=None) -> (scores, ids, Plan), and how many vectors match (estimated
    for a wide filter). A filter that keeps at least WIDE_SHARE of the rows (estimated from a sample,
    so nothing reads every row) and more than `exact_limit` of them takes `wide_plan`; any other is
    resolved to its ids (`filtered_plan`: exact when few)."""
    share = estimated_share(columns, spec)
    many = share * len(columns) > exact_limit(index.ntotal, index.nprobe)
    if share >= WIDE_SHARE and many and index.ntotal == len(columns):
        def wide(query: np.ndarray, k: int, nprobe: int | None = None,
                 rerank: int | None = None) -> tuple[np.ndarray, np.ndarray, Plan]:
            return wide_plan(index, columns, spec, share, query, k, exact, nprobe, rerank)

        return wide, max(1, round(share * len(columns)))
    allowed = Allowed.of(columns, spec)

    def by_ids(query: np.ndarray, k: int, nprobe: int | None = None,
               rerank: int | None = None) -> tuple[np.ndarray, np.ndarray, Plan]:
        return filtered_plan(index, query, allowed, k, exact, nprobe, rerank)

    return by_ids, len(allowed.ids)


def wide_plan(index: VectorIndex, columns: MetadataColumns, spec: ColumnFilter, share: float, query: np.ndarray,
              k: int, exact: ExactRows, nprobe: int | None = None,
              rerank: int | None = None) -> tuple[np.ndarray, np.ndarray, Plan]:
    """A filter that keeps `share` (>= WIDE_SHARE) of the vectors: the index searched as if unfiltered
    with 1/share more lists and candidates, the candidates tested at their own rows (`passes`), the
    first re-rank-depth that pass re-ranked exactly; asked 4x deeper while short. Short even with
    every candidate asked (the estimate was wrong): the filter resolved to its ids after all."""
    query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    depth = max(k, index.rerank_depth(rerank))
    nlist = index.layout.nlist
    widen = 1.0 / max(share, WIDE_SHARE)
    while True:
        fetch = min(index.ntotal, math.ceil(depth * widen * WIDE_MARGIN))
        probe = min(nlist, math.ceil((nprobe or index.nprobe) * widen)) if nlist else 0
        _, found = index.index.search(query, fetch, params=search_parameters(index, None, probe))
        found = found[0][found[0] >= 0]
        rows = np.searchsorted(columns.ids, found).clip(0, max(len(columns) - 1, 0))
        known = columns.ids[rows] == found
        kept = found[known][passes(columns, spec, rows[known])][:depth]
        if len(kept) >= k:
            scores, ids = exact_top(query, np.sort(kept), k, exact)
            if ids.shape[1] >= k:
                return scores, ids, Plan("wide", round(share * len(columns)), probe)
        if fetch >= index.ntotal:
            return filtered_plan(index, query, Allowed.of(columns, spec), k, exact, nprobe, rerank)
        widen *= 4


def filtered_search(index: VectorIndex, query: np.ndarray, allowed: Allowed | np.ndarray | None, k: int,
                    exact: ExactRows, nprobe: int | None = None, rerank: int | None = None,
                    exact_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (1, min(k, m)) for m allowed ids, best first; see `filtered_plan`."""
    scores, ids, _ = filtered_plan(index, query, allowed, k, exact, nprobe, rerank, exact_max)
    return scores, ids


def filtered_plan(index: VectorIndex, query: np.ndarray, allowed: Allowed | np.ndarray | None, k: int,
                  exact: ExactRows, nprobe: int | None = None, rerank: int | None = None,
                  exact_max: int | None = None) -> tuple[np.ndarray, np.ndarray, Plan]:
    """`filtered_search` and the plan it took. `allowed` None searches unfiltered (`index.search`);
    a bare array is sorted unique ids with no known bound (hash-set selector). Up to `exact_max`
    (None: `exact_limit(index.ntotal)`) allowed ids are scored exactly."""
    query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    if allowed is None:
        scores, ids = index.search(query, k, nprobe=nprobe, rerank=rerank)
        keep = ids[0] >= 0
        return scores[:, keep], ids[:, keep], Plan("unfiltered", index.ntotal)
    if not isinstance(allowed, Allowed):
        allowed = Allowed(np.unique(np.asarray(allowed, dtype=np.int64)))
    m = len(allowed.ids)
    if m == 0 or k <= 0:
        return np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64), Plan("empty", 0)
    depth = index.rerank_depth(rerank)
    path = choose_path(m, index.ntotal, nprobe or index.nprobe, depth, index.codes is not None, exact_max)
    if path == "exact":
        scores, ids = exact_top(query, allowed.sorted_ids, k, exact)
        return scores, ids, Plan("exact", m)
    if path == "codes":
        return _code_plan(index, query, allowed, k, exact, depth)
    return _ann_plan(index, query, allowed, k, exact, nprobe, rerank)


def choose_path(matching: int, total: int, nprobe: int, depth: int, coded: bool, exact_max: int | None = None) -> str:
    """'exact', 'codes' or 'ann' (the selector) for `matching` of `total` vectors, searched with `nprobe`
    lists and `depth` re-ranked, `coded` if the index has a code table: the path the cost model
    finds cheapest. `exact_max` (or EXACT_FILTER_MAX) forces exact up to it and the selector above,
    CODE_FILTER_MAX the code path up to it."""
    forced = exact_max if exact_max is not None else EXACT_FILTER_MAX
    if forced is not None and matching <= forced:
        return "exact"
    if coded and CODE_FILTER_MAX is not None:
        return "codes" if matching <= CODE_FILTER_MAX else "ann"
    if forced is not None:
        return "ann"
    if not coded:
        return "exact" if matching <= exact_limit(total, nprobe) else "ann"
    if exact_cost(matching, total) <= code_cost(matching, depth):
        return "exact"
    return "codes" if matching <= code_limit(total, nprobe, depth) else "ann"


def _code_plan(index: VectorIndex, query: np.ndarray, allowed: Allowed, k: int, exact: ExactRows,
               depth: int) -> tuple[np.ndarray, np.ndarray, Plan]:
    """The matching ids' codes scored from the index's code table, the best `depth` of them re-ranked
    exactly; short of min(k, m) (rows deleted since), every id scored exactly."""
    codes = index.codes
    assert codes is not None
    m = len(allowed.ids)
    candidates = codes.best(index.rotate(query), allowed.ids, max(k, depth))
    scores, ids = exact_top(query, np.sort(candidates), k, exact)  # rows read in order
    if ids.shape[1] >= min(k, m):
        return scores, ids, Plan("codes", m)
    scores, ids = exact_top(query, allowed.sorted_ids, k, exact)
    return scores, ids, Plan("codes+exact", m)


def _ann_plan(index: VectorIndex, query: np.ndarray, allowed: Allowed, k: int, exact: ExactRows,
              nprobe: int | None, rerank: int | None) -> tuple[np.ndarray, np.ndarray, Plan]:
    """The selector search, then the guarantee: all lists if short of min(k, m), then exact."""
    m = len(allowed.ids)
    want = min(k, m)
    kept = allowed.selector()
    depth = index.rerank_depth(rerank)
    nlist = index.layout.nlist
    base = nprobe or index.nprobe
    probe = scaled_nprobe(base, m, index.ntotal, nlist, scan_matching(index.ntotal, base))
    scores, ids = _selector_search(index, query, kept, k, depth, probe, exact)
    if ids.shape[1] >= want:
        return scores, ids, Plan("ann", m, probe)
    if nlist and probe < nlist:
        scores, ids = _selector_search(index, query, kept, k, depth, nlist, exact)
        if ids.shape[1] >= want:
            return scores, ids, Plan("ann", m, nlist)
    scores, ids = exact_top(query, allowed.sorted_ids, k, exact)
    return scores, ids, Plan("ann+exact", m, probe)


def exact_limit(total: int, nprobe: int | None = None) -> int:
    """The most matching vectors the plan scores exactly in an index of `total` searched with `nprobe`
    lists (None: DEFAULT_NPROBE): where `exact_cost` (rising with the match count) meets
    `selector_cost` (falling), every one in a small index; `EXACT_FILTER_MAX` when set."""
    if EXACT_FILTER_MAX is not None:
        return EXACT_FILTER_MAX
    return _costs_meet(max(total, 1), scan_matching(total, nprobe))


@functools.lru_cache(maxsize=64)
def _costs_meet(total: int, scan: int) -> int:
    return _first_not_cheaper(total, lambda m: exact_cost(m, total) < selector_cost(m, total, scan))


def _first_not_cheaper(high: int, cheaper: Callable[[int], bool]) -> int:
    """The first count in [1, high] where `cheaper` (true up to some count) no longer holds; high if none."""
    low = 1
    while low < high:
        middle = (low + high) // 2
        if cheaper(middle):
            low = middle + 1
        else:
            high = middle
    return low


def exact_cost(matching: int, total: int) -> float:
    """Modelled seconds to score `matching` of `total` rows exactly."""
    return matching * EXACT_ROW_COST * max(1.0, total / SCAN_REFERENCE) ** EXACT_ROW_GROWTH


def code_cost(matching: int, depth: int) -> float:
    """Modelled seconds to score `matching` ids from the code table and re-rank `depth`."""
    return matching * CODE_ROW_COST + min(matching, depth) * RERANK_ROW_COST + CODE_FIXED_COST


@functools.lru_cache(maxsize=64)
def code_limit(total: int, nprobe: int | None, depth: int) -> int:
    """The most matching vectors the code path takes before the selector costs less (`code_cost`
    meets `selector_cost`); every one in a small index."""
    scan = scan_matching(total, nprobe)
    return _first_not_cheaper(max(total, 1), lambda m: code_cost(m, depth) < selector_cost(m, total, scan))


def selector_cost(matching: int, total: int, scan: int | None = None) -> float:
    """Modelled seconds for the selector path when `matching` of `total` pass: it visits the lists
    that hold ~`scan` (None: `scan_matching(total)`) of them, or all."""
    scan = scan_matching(total) if scan is None else scan
    visited = total * min(1.0, scan / max(matching, 1))
    fixed = SELECTOR_FIXED_COST * max(1.0, total / SCAN_REFERENCE) ** SELECTOR_FIXED_GROWTH
    return visited * SCAN_CODE_COST + min(matching, scan) * MATCH_CODE_COST + fixed


def scan_matching(total: int, nprobe: int | None = None) -> int:
    """Matching vectors the selector path passes on average in an index of `total` searched with
    `nprobe` lists (None: DEFAULT_NPROBE; see SCAN_MATCHING)."""
    effort = (nprobe or DEFAULT_NPROBE) / DEFAULT_NPROBE
    return max(1, round(SCAN_MATCHING * (SCAN_REFERENCE / max(total, 1)) ** SCAN_EXPONENT * effort))


def scaled_nprobe(base: int, matching: int, total: int, nlist: int, scan: int | None = None) -> int:
    """Lists to probe when only `matching` of `total` vectors may be returned: enough to pass `scan`
    (None: `scan_matching(total)`) matching vectors on average, scan * nlist / matching, so it grows
    as the filter narrows; at least `base`, at most every list."""
    if not nlist:
        return 0
    scan = scan_matching(total) if scan is None else scan
    enough = scan * nlist / max(matching, 1)
    return int(min(nlist, max(base, math.ceil(enough))))


def _selector_search(index: VectorIndex, query: np.ndarray, kept: _Kept, k: int, depth: int, probe: int,
                     exact: ExactRows) -> tuple[np.ndarray, np.ndarray]:
    """The raw faiss index searched through the selector, its best max(k, depth) re-ranked on `exact`."""
    fetch = min(max(k, depth) if index.layout.lossy else k, index.ntotal)
    if index.layout.hnsw_quantizer and probe * FLAT_ASSIGN_SHARE >= index.layout.nlist and \
            index.index.metric_type == _faiss().METRIC_INNER_PRODUCT:
        scores, ids = _search_flat_assigned(index, query, kept.selector, fetch, probe)
    else:
        scores, ids = index.index.search(query, fetch, params=search_parameters(index, kept.selector, probe))
    found = ids[0][ids[0] >= 0]
    if not index.layout.lossy or depth == 0:
        keep = ids[0] >= 0
        return scores[:, keep][:, :k], ids[:, keep][:, :k]
    return exact_top(query, np.sort(found), k, exact)  # rows read in order: ~1.3x faster at 10M


def _search_flat_assigned(index: VectorIndex, query: np.ndarray, selector: Any, k: int,
                          probe: int) -> tuple[np.ndarray, np.ndarray]:
    """An HNSW-quantized IVF index searched through `selector` with its `probe` lists chosen by brute
    force over the centroids: asked for thousands of lists, HNSW walks most of its graph (10M,
    16,384 lists, one thread: 8.7 ms for 2,048, 64 ms for all) where one product with the centroids
    costs 1.3 ms. Same lists, same answers (checked against the HNSW search at 300k-3M matching)."""
    faiss = _faiss()

    x = index.rotate(np.reshape(query, (1, -1)))  # through OPQ, as the lists' vectors were
    ivf = faiss.extract_index_ivf(index.index)
    storage = faiss.downcast_index(faiss.downcast_index(ivf.quantizer).storage)
    centroids = faiss.rev_swig_ptr(storage.get_xb(), ivf.nlist * ivf.d).reshape(ivf.nlist, ivf.d)
    similarity = x @ centroids.T  # every jrsearch index is inner product (`VectorIndex.build_from`)
    probe = min(probe, ivf.nlist)
    lists = np.argpartition(-similarity[0], probe - 1)[:probe] if probe < ivf.nlist else np.arange(ivf.nlist)
    coarse = similarity[:, lists]
    assign = np.ascontiguousarray(lists[None, :], dtype=np.int64)
    coarse = np.ascontiguousarray(coarse, dtype=np.float32)
    scores = np.empty((1, k), np.float32)
    ids = np.empty((1, k), np.int64)
    params = faiss.SearchParametersIVF(sel=selector, nprobe=probe)
    ivf.search_preassigned_c(1, faiss.swig_ptr(x), k, faiss.swig_ptr(assign), faiss.swig_ptr(coarse),
                             faiss.swig_ptr(scores), faiss.swig_ptr(ids), False, params)
    return scores, ids


def search_parameters(index: VectorIndex, selector: Any, probe: int) -> Any:
    """faiss SearchParameters carrying `selector` to the stage that scans: IVF (through an OPQ
    pre-transform, with an HNSW quantizer's efSearch), or a flat/IDMap index."""
    faiss = _faiss()

    layout = index.layout
    if not layout.nlist:
        return faiss.SearchParameters(sel=selector)
    params = faiss.SearchParametersIVF(sel=selector, nprobe=probe)
    if layout.hnsw_quantizer:
        hnsw = faiss.SearchParametersHNSW(efSearch=max(64, 2 * probe))
        params.quantizer_params = hnsw
        params._hnsw = hnsw  # the C++ struct holds a bare pointer: keep the Python object alive
    if isinstance(index.index, faiss.IndexPreTransform):
        outer = faiss.SearchParametersPreTransform(index_params=params)
        outer._inner = params  # the C++ struct holds a bare pointer
        return outer
    return params


def exact_top(query: np.ndarray, ids: np.ndarray, k: int, exact: ExactRows) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of one query with the rows of `ids` (read in chunks), best k first.

    Float16 rows are gathered straight into the codes of a faiss fp16 flat index and scored by its
    kernels: no float32 copy (numpy's float16 cast is ~20x slower than the scoring) and no copy into
    faiss. Rows that come back NaN (deleted) are dropped; the answer holds min(k, live) results."""
    query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    best_scores = np.zeros(0, np.float32)
    best_ids = np.zeros(0, np.int64)
    block = _Float16Block(query.shape[1], min(len(ids), EXACT_CHUNK)) if len(ids) else None
    for start in range(0, len(ids), EXACT_CHUNK):
        assert block is not None
        part = np.asarray(ids[start:start + EXACT_CHUNK], dtype=np.int64)
        rows = np.asarray(exact(part, block.rows[:len(part)]))
        live = ~np.isnan(rows[:, 0]) if rows.size else np.zeros(len(part), bool)
        if not live.all():
            rows, part = rows[live], part[live]
        if rows.dtype == np.float16:
            scores, top = block.top(query, rows, k)
        else:
            scores, top = _float32_top(query, rows, k)
        best_scores = np.concatenate([best_scores, scores])
        best_ids = np.concatenate([best_ids, part[top]])
    order = np.lexsort((best_ids, -best_scores))[:k]
    return best_scores[order][None, :], best_ids[order][None, :]


class _Float16Block:
    """A faiss fp16 flat index whose code storage is the numpy buffer `rows`: what is gathered into
    it is searched where it lies."""

    def __init__(self, dim: int, capacity: int) -> None:
        faiss = _faiss()

        self.index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        self.rows = code_storage(self.index, capacity, dim * 2).view(np.float16)

    def top(self, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row positions) of the best min(k, len(rows)) of `rows` (float16), unordered."""
        if len(rows) and (_address(rows) != _address(self.rows) or not rows.flags.c_contiguous):
            self.rows[:len(rows)] = rows  # a reader that did not write into the buffer, or dropped rows
        return search_stored(self.index, query, len(rows), k)


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def _float32_top(query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row positions) of the best min(k, len(rows)) float32 rows, unordered."""
    if len(rows) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    scores = np.ascontiguousarray(rows, dtype=np.float32) @ query[0]
    top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
    return scores[top], top
