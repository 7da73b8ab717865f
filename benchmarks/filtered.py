"""Filtered search at N synthetic vectors: the filter-aware plan against today's post-filter.

    nice -n 19 python -m jrsearch.benchmarks.filtered --vectors 1000000 --index-memory 256M

Vectors: the scale benchmark's clustered set (`scale.VectorSet`), kept as float16 (as the library's
shards keep them) behind an `ArraySource`. The index is the one the library chooses at that size
under `--index-memory` (the PQ regime: OPQ64,IVF{nlist},PQ64 re-ranked), built once and cached under
--workdir. Metadata, independent of the vectors: a path order (a folder is a contiguous rank range),
capture dates uniform over ten years, 5% with GPS (around 50 cities), 20 cameras with Zipf-like
frequencies (10% unknown).

Swept per filter (folder, date range, camera, folder AND date, GPS radius) over matching counts from
one item to all, plus unfiltered: recall@10 against exact filtered search over the float16 vectors
(recall counts min(10, m) true neighbours), results short of min(10, m), single-client p50/p95 ms,
and queries per second from 2 client threads, each query resolving its filter (`select()`) and
running the plan; and the same for today's post-filter (search k',
drop what fails, widen 4x: `ranking.ranked_search`'s loop, without its SQLite reads). Also the
exact-vs-ANN crossover that `filtered_search.exact_limit` models, and `select()`'s own cost per filter.
The workload line pools every filtered query of the sweep (each filter and selectivity weighted
alike): its recall@10 and 2-client queries per second per core, the Big-ANN'23 filtered track's
measure (its FAISS baseline: 3,032 QPS on 8 vCPUs at recall >= 0.9, 379 per core, 192-d). A sweep row
asks one filter 100 times, so its rows and codes are warm; the mixed line asks every (query, filter)
pair of the sweep once, shuffled, and times that stream as it is: the pooled figure without the warmth.
Threads: faiss and BLAS single-threaded per query (`--threads 1`), so 2 client threads use 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from jrsearch.benchmarks.output import print_and_save
from jrsearch.benchmarks.scale import DIM, VectorSet

K = 10
YEARS = 10
START = 1_420_070_400  # 2015-01-01 UTC
CAMERAS = 20


def make_vectors(n: int, vectors: VectorSet) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float16)
    first = 0
    for chunk in vectors.chunks(n):
        out[first:first + len(chunk)] = chunk
        first += len(chunk)
    return out


def make_source(stored: np.ndarray) -> Any:
    """The float16 rows with ids 1..n, found as the library finds them (`vectors.ShardSource`): through
    slot runs, one per shard of SHARD_ROWS (`vectors.SlotRuns`), not a search of every id."""
    from jrsearch.retrieval.index import ArraySource
    from jrsearch.retrieval.vectors import SHARD_ROWS, SlotRuns

    class RunSource(ArraySource):
        def __init__(self) -> None:  # no copy of the rows, as ArraySource's constructor makes
            n = len(stored)
            self.ids = np.arange(1, n + 1, dtype=np.int64)
            self.vectors = stored
            self.dim = DIM
            shards = np.arange((n + SHARD_ROWS - 1) // SHARD_ROWS, dtype=np.int64)
            self.runs = SlotRuns(0, shards * SHARD_ROWS + 1, np.minimum(SHARD_ROWS, n - shards * SHARD_ROWS),
                                 shards, np.zeros(len(shards), np.int64))

        def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """(row of each id in `stored`, whether it is there)."""
            covered, shard, row = self.runs.locate(np.asarray(ids, dtype=np.int64))
            return np.where(covered, shard * SHARD_ROWS + row, 0), covered

        def get(self, ids: np.ndarray) -> np.ndarray:
            rows, covered = self.rows(ids)
            out = self.vectors[rows].astype(np.float32)
            out[~covered] = np.nan
            return out

    return RunSource()


def float16_rows(source: Any) -> Any:
    """ids -> float16 rows as stored, gathered into `out` where given (NaN rows for unknown ids): what
    the plan's exact path reads (`vectors.ShardSource.get_stored`)."""
    def get(ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        rows, covered = source.rows(ids)
        out = np.take(source.vectors, rows, axis=0, out=out)
        out[~covered] = np.nan
        return out

    return get


def build_or_load(source: Any, n: int, workdir: Path) -> Any:
    """The index (with its code table) built once and cached under `workdir`; a cached index saved
    before code tables gets one (encoded from `source`, saved beside it)."""
    from jrsearch.retrieval.index import VectorIndex, choose_factory

    factory = choose_factory(n, DIM)
    path = workdir / f"filtered-{n}-{factory.replace(',', '_')}.faiss"
    if path.exists():
        index = VectorIndex.load(path, factory, mmap=False, source=source)
        if index.wants_codes and index.codes is None:
            index.add_code_table(source).save(path)
        return index, 0.0
    started = time.perf_counter()
    index = VectorIndex.build_from(source, factory)
    seconds = time.perf_counter() - started
    workdir.mkdir(parents=True, exist_ok=True)
    index.save(path)
    return index, seconds


def make_columns(n: int, seed: int = 7) -> Any:
    from jrsearch.retrieval.filtered_search import MetadataColumns

    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    path_rank = rng.permutation(n).astype(np.int32)
    taken = START + rng.integers(0, YEARS * 365 * 86400, n)
    taken[rng.random(n) < 0.02] = np.iinfo(np.int64).min
    gps = rng.random(n) < 0.05
    cities = np.column_stack([rng.uniform(-60, 70, 50), rng.uniform(-180, 180, 50)])
    city = cities[rng.integers(0, 50, n)]
    lat = np.where(gps, city[:, 0] + rng.normal(0, 0.3, n), np.nan).astype(np.float32)
    lon = np.where(gps, (city[:, 1] + rng.normal(0, 0.3, n) + 180) % 360 - 180, np.nan).astype(np.float32)
    weights = 1.0 / np.arange(1, CAMERAS + 1) ** 1.3
    camera = rng.choice(CAMERAS, n, p=weights / weights.sum()).astype(np.int32)
    camera[rng.random(n) < 0.10] = -1
    return MetadataColumns.build(ids, path_rank, taken, lat, lon, camera,
                                 [f"camera-{i:02d}" for i in range(CAMERAS)]), cities


def filters(columns: Any, cities: np.ndarray, n: int) -> list[tuple[str, int, Any]]:
    """(name, target count, ColumnFilter) over the sweep of matching counts."""
    from jrsearch.retrieval.filtered_search import ColumnFilter

    sweep = (1, 10, 30, 100, 1000, 3000, 10_000, 30_000, 50_000, 100_000, n * 3 // 10, n * 2 // 3, n)
    counts = sorted({c for c in sweep if 1 <= c <= n})
    sorted_taken = np.sort(columns.taken[columns.taken > np.iinfo(np.int64).min])
    out: list[tuple[str, int, Any]] = []
    for count in counts:
        lo = (n - count) // 3
        out.append(("folder", count, ColumnFilter(rank_ranges=((lo, lo + count),))))
        first = (len(sorted_taken) - min(count, len(sorted_taken))) // 2
        last = min(first + count, len(sorted_taken)) - 1
        out.append(("date", count, ColumnFilter(taken_range=(int(sorted_taken[first]), int(sorted_taken[last]) + 1))))
        out.append(("folder_and_date", count, ColumnFilter(rank_ranges=((0, min(n, count * 4)),),
                                                           taken_range=(START, START + YEARS * 365 * 86400 // 4))))
    for code in (CAMERAS - 1, 9, 2, 0):
        out.append(("camera", int(np.sum(columns.camera == code)), ColumnFilter(cameras=(code,))))
    out.append(("camera", 0, ColumnFilter(cameras=(CAMERAS + 5,))))
    for radius in (0.5, 5, 50, 500, 5000):
        out.append(("gps_near", 0, ColumnFilter(near=(float(cities[0, 0]), float(cities[0, 1]), radius))))
    return out


def exact_truth(stored: np.ndarray, queries: np.ndarray, ids: np.ndarray, k: int = K) -> list[set[int]]:
    """The exact filtered top-k ids per query, by brute force over the allowed float16 rows."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(ids), 1 << 16):
        part = ids[start:start + (1 << 16)]
        scores = queries @ stored[part - 1].astype(np.float32).T
        best_s = np.concatenate([best_s, scores], axis=1)
        best_i = np.concatenate([best_i, np.broadcast_to(part, scores.shape)], axis=1)
        if best_s.shape[1] > k:
            top = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, top, 1), np.take_along_axis(best_i, top, 1)
    return [set(row.tolist()) for row in best_i]


def post_filter(index: Any, query: np.ndarray, allowed_mask: np.ndarray, k: int = K) -> np.ndarray:
    """Today's plan (`ranking.ranked_search`): search k', keep the ids that pass, widen 4x until k pass."""
    fetch = max(k * 8, 256)
    while True:
        _, ids = index.search(query[None, :], fetch)
        found = ids[0][ids[0] >= 0]
        kept = found[allowed_mask[found]]
        if len(kept) >= k or fetch >= index.ntotal:
            return kept[:k]
        fetch = min(index.ntotal, fetch * 4)


def measure(run: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, truth: list[set[int]],
            want: int, clients: int) -> dict:
    """Recall, short answers, single-client latency and `clients`-thread QPS of `run` over queries."""
    run(queries[0])  # warm
    latencies, recalls, short = [], [], 0
    for query, true in zip(queries, truth, strict=True):
        started = time.perf_counter()
        got = run(query)
        latencies.append((time.perf_counter() - started) * 1000)
        recalls.append(len(set(got.tolist()) & true) / max(1, len(true)) if true else 1.0)
        short += int(len(got) < want)
    result = {"recall_at_10": round(float(np.mean(recalls)), 4), "min_recall": round(float(np.min(recalls)), 2),
              "short": short, "p50_ms": round(float(np.percentile(latencies, 50)), 2),
              "p95_ms": round(float(np.percentile(latencies, 95)), 2)}
    if clients:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(run, queries))
        result["qps_2_clients"] = round(len(queries) / (time.perf_counter() - started), 1)
    return result


def crossover(index: Any, columns: Any, queries: np.ndarray, exact: Callable, n: int, nprobe: int | None,
              rerank: int | None) -> list[dict]:
    """Per matching count: the exact path's, the code path's (where the index has a code table) and
    the selector path's p50 ms on a folder filter, at the run's --nprobe and --rerank."""
    from jrsearch.retrieval import filtered_search
    from jrsearch.retrieval.filtered_search import Allowed, ColumnFilter
    from jrsearch.retrieval.filtered_search import filtered_search as search

    rows = []
    paths = {"exact_ms": n + 1, "ann_ms": 0}
    if index.codes is not None:
        paths["codes_ms"] = 0
    for count in (1000, 3000, 10_000, 30_000, 50_000, 100_000, 200_000):
        if count > n // 2:
            break
        allowed = Allowed.of(columns, ColumnFilter(rank_ranges=((0, count),)))
        row: dict[str, Any] = {"matching": count}
        for name, limit in paths.items():
            if name == "exact_ms" and count > 50_000:
                continue  # ~0.5 us a row at 10M: far off the others
            filtered_search.CODE_FILTER_MAX = n if name == "codes_ms" else None
            times = []
            for query in queries[:40]:
                started = time.perf_counter()
                search(index, query, allowed, K, exact, nprobe, rerank, exact_max=limit)
                times.append((time.perf_counter() - started) * 1000)
            row[name] = round(float(np.median(times[5:])), 2)
        filtered_search.CODE_FILTER_MAX = None
        rows.append(row)
    return rows


def select_cost(columns: Any, specs: list[tuple[str, int, Any]]) -> dict:
    from jrsearch.retrieval.filtered_search import mask, select

    out: dict[str, list[float]] = {}
    for name, _, spec in specs:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            select(columns, spec)
            times.append((time.perf_counter() - started) * 1000)
        out.setdefault(name, []).append(round(float(np.median(times)), 2))
    started = time.perf_counter()
    mask(columns, specs[-1][2])
    out["mask_bool_gps_ms"] = [round((time.perf_counter() - started) * 1000, 2)]
    return out


def sweep(index: Any, columns: Any, stored: np.ndarray, queries: np.ndarray, specs: list, args: Any,
          cases: list[tuple[Any, list[set[int]]]] | None = None) -> list[dict]:
    """One row per filter, its queries in a row (the filter's rows warm after the first); each
    filter that matches something, with its exact answers, is appended to `cases` where given."""
    from jrsearch.retrieval.filtered_search import Allowed, column_plan

    exact = float16_rows(index.source)
    rows = []
    for name, _, spec in specs:
        allowed = Allowed.of(columns, spec)
        m = len(allowed.ids)
        truth = exact_truth(stored, queries, allowed.ids)
        if cases is not None and m:
            cases.append((spec, truth))
        want = min(K, m)
        plans: list[str] = []

        def plan(query: np.ndarray, spec: Any = spec, plans: list[str] = plans) -> np.ndarray:
            run, _ = column_plan(index, columns, spec, exact)  # the filter resolved in every query, as the library does
            _, ids, how = run(query, K, args.nprobe, args.rerank)
            plans.append(how.path)
            return ids[0]

        row = {"filter": name, "matching": m, "selectivity": round(m / len(columns), 7),
               "plan": measure(plan, queries, truth, want, clients=2)}
        row["plan"]["path"] = max(set(plans), key=plans.count) if plans else "?"
        if not args.no_baseline:
            bits = np.zeros(columns.id_bound, bool)
            bits[allowed.ids] = True
            few = max(5, args.baseline_queries if m < len(columns) // 100 else len(queries))

            def baseline(query: np.ndarray, bits: np.ndarray = bits) -> np.ndarray:
                return post_filter(index, query, bits)

            row["post_filter"] = measure(baseline, queries[:few], truth[:few], want, 0)
        rows.append(row)
        print(row, flush=True)
    return rows


def mixed(index: Any, columns: Any, queries: np.ndarray, cases: list[tuple[Any, list[set[int]]]], args: Any,
          clients: int = 2) -> dict:
    """Every (query, filter) pair of the sweep in one shuffled stream, each query resolving its own
    filter, as Big-ANN's filtered track asks a mixed query set: no filter's rows or codes are warm
    from the query before, as they are in a sweep row. Latency from one client, then QPS from
    `clients` threads over the same stream."""
    from jrsearch.retrieval.filtered_search import column_plan

    exact = float16_rows(index.source)
    work = [(case, q) for case in range(len(cases)) for q in range(len(queries))]
    np.random.default_rng(11).shuffle(work)

    def one(item: tuple[int, int]) -> np.ndarray:
        case, q = item
        run, _ = column_plan(index, columns, cases[case][0], exact)
        return run(queries[q], K, args.nprobe, args.rerank)[1][0]

    latencies, recalls, short = [], [], 0
    for item in work:
        started = time.perf_counter()
        got = one(item)
        latencies.append((time.perf_counter() - started) * 1000)
        true = cases[item[0]][1][item[1]]
        recalls.append(len(set(got.tolist()) & true) / len(true) if true else 1.0)
        short += int(len(got) < len(true))
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, work))
    qps = len(work) / (time.perf_counter() - started)
    return {"queries": len(work), "filters": len(cases), "recall_at_10": round(float(np.mean(recalls)), 4),
            "short": short, "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p95_ms": round(float(np.percentile(latencies, 95)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2),
            f"qps_{clients}_clients": round(qps, 1), "qps_per_core": round(qps / min(clients, os.cpu_count() or 1), 1)}


def unfiltered(index: Any, stored: np.ndarray, queries: np.ndarray) -> dict:
    """The plan with no filter against `VectorIndex.search` (today), each measured twice, alternately:
    the second round is kept (the first warms and absorbs a shared machine's drift)."""
    from jrsearch.retrieval.filtered_search import filtered_search

    truth = exact_truth(stored, queries, np.arange(1, len(stored) + 1, dtype=np.int64))
    exact = float16_rows(index.source)
    runs: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "plan": lambda q: filtered_search(index, q, None, K, exact)[1][0],
        "today": lambda q: index.search(q[None, :], K)[1][0]}
    result: dict[str, Any] = {"filter": "none", "matching": len(stored), "selectivity": 1.0}
    for _ in range(2):
        for name, run in runs.items():
            result[name] = measure(run, queries, truth, K, 2)
    return result


def workload(rows: list[dict], cores: int) -> dict:
    """Every filtered query of the sweep pooled: mean recall@10 and queries per second per core
    (total queries over total time, so each row weighs by its time, as a mixed query set would)."""
    filtered = [row["plan"] for row in rows if row["matching"] > 0]
    qps = len(filtered) / sum(1 / plan["qps_2_clients"] for plan in filtered)
    return {"rows": len(filtered), "recall_at_10": round(float(np.mean([p["recall_at_10"] for p in filtered])), 4),
            "min_row_recall": min(p["recall_at_10"] for p in filtered), "qps_2_clients": round(qps, 1),
            "qps_per_core": round(qps / cores, 1),
            "min_row_qps_per_core": round(min(p["qps_2_clients"] for p in filtered) / cores, 1),
            "big_ann23_faiss_baseline_qps_per_core": round(3032 / 8, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--centres", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=0.6)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--baseline-queries", type=int, default=20,
                        help="Queries for the post-filter baseline below 1%% selectivity (it scans far).")
    parser.add_argument("--index-memory", default="256M", help="JRSEARCH_INDEX_MEMORY: 256M gives PQ at 1M.")
    parser.add_argument("--threads", type=int, default=1, help="faiss/BLAS threads per query.")
    parser.add_argument("--nprobe", type=int,
                        help="Lists probed per query (the library's --nprobe; default: the index's, 32).")
    parser.add_argument("--rerank", type=int, help="Candidates re-ranked exactly (the library's --rerank).")
    parser.add_argument("--exact-max", type=int, help="Override exact_limit (filtered_search.EXACT_FILTER_MAX).")
    parser.add_argument("--scan-matching", type=int, help="Override filtered_search.SCAN_MATCHING.")
    parser.add_argument("--wide-share", type=float, help="Override filtered_search.WIDE_SHARE (above 1: never wide).")
    parser.add_argument("--only", help="Comma-separated filter names to sweep (folder, date, folder_and_date, camera, "
                        "gps_near); default: all.")
    parser.add_argument("--tag", default="", help="Appended to the result file's name.")
    parser.add_argument("--no-crossover", dest="crossover", action="store_false",
                        help="Skip timing each path at fixed matching counts.")
    parser.add_argument("--crossover-only", action="store_true", help="Time each path, then stop.")
    parser.add_argument("--no-baseline", action="store_true",
                        help="Skip the post-filter baseline (at 10M its selective rows take ~2 s a query).")
    parser.add_argument("--workdir", type=Path, default=Path("results/filtered-work"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    os.environ["JRSEARCH_INDEX_MEMORY"] = args.index_memory
    from jrsearch.retrieval import filtered_search

    if args.exact_max is not None:
        filtered_search.EXACT_FILTER_MAX = args.exact_max
    if args.scan_matching is not None:
        filtered_search.SCAN_MATCHING = args.scan_matching
    if args.wide_share is not None:
        filtered_search.WIDE_SHARE = args.wide_share
    vectors = VectorSet("clustered", DIM, args.centres, args.spread)
    stored = make_vectors(args.vectors, vectors)
    index, build_s = build_or_load(make_source(stored), args.vectors, args.workdir)
    _threads(args.threads)  # after the build, which uses every core
    columns, cities = make_columns(args.vectors)
    queries = vectors.draw(args.queries, np.random.default_rng([vectors.seed, 999_999]))
    specs = filters(columns, cities, args.vectors)
    if args.only:
        specs = [spec for spec in specs if spec[0] in args.only.split(",")]
    report: dict[str, Any] = {
        "vectors": args.vectors, "dim": DIM, "factory": index.factory, "nprobe": index.nprobe,
        "exact_limit": filtered_search.exact_limit(args.vectors, args.nprobe),
        "code_limit": filtered_search.code_limit(args.vectors, args.nprobe, index.rerank_depth(args.rerank))
        if index.codes is not None else 0,
        "scan_matching": filtered_search.scan_matching(args.vectors, args.nprobe),
        "wide_share": filtered_search.WIDE_SHARE, "nprobe_asked": args.nprobe,
        "rerank": index.rerank_depth(args.rerank), "build_s": round(build_s, 1), "queries": args.queries,
        "threads_per_query": args.threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": os.getloadavg()}}
    report["select_ms"] = select_cost(columns, specs)
    if args.crossover:
        report["crossover"] = crossover(index, columns, queries, float16_rows(index.source), args.vectors,
                                        args.nprobe, args.rerank)
        if args.crossover_only:
            report["machine"]["load_avg_at_end"] = os.getloadavg()
            folder = args.out / f"{date.today().isoformat()}-{platform.node() or 'machine'}"
            print_and_save(report, folder, f"filtered-crossover-{args.vectors}-{args.index_memory}{args.tag}")
            return
    print(report, flush=True)
    report["unfiltered"] = unfiltered(index, stored, queries)
    cases: list[tuple[Any, list[set[int]]]] = []
    report["sweep"] = sweep(index, columns, stored, queries, specs, args, cases)
    report["workload"] = workload(report["sweep"], min(2, os.cpu_count() or 1))
    report["mixed"] = mixed(index, columns, queries, cases, args)
    print({"workload": report["workload"], "mixed": report["mixed"]}, flush=True)
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    folder = args.out / f"{date.today().isoformat()}-{platform.node() or 'machine'}"
    print_and_save(report, folder, f"filtered-{args.vectors}-{args.index_memory}{args.tag}")


def _threads(count: int) -> None:
    import faiss

    faiss.omp_set_num_threads(count)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(count)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
