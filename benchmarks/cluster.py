"""Scale-out overheads on a local Ray cluster, each against its single-process baseline.

    python -m jrsearch.benchmarks.cluster --images 2000 --vectors 1000000

Back to back, on the same files and vectors:
  * embed: `jrsearch cluster embed --address` (Ray Data, CPU actors) vs single-process
    `jrsearch index` over the same generated photos with `tiny-test`, each command in a fresh
    process; images/s from wall time, median of `--repeats` alternating runs. The Ray job runs
    on an already running local cluster, as on a real one; starting that cluster is reported apart;
  * build: `run_build` with 2 add workers vs `build_single` over the same synthetic clustered
    vectors; seconds, and whether both return the same ids for the same queries;
  * search: p50 of one-query searches, k=10, over 2 serving shards (in process, and one Ray actor
    per shard behind the router: compiled graph and plain calls) vs the merged on-disk index; the
    variants take turns, `--repeats` rounds, median of the rounds' p50s.
The machine may be shared: the 1-minute load average is recorded beside every figure.
Prints and saves JSON to results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from jrsearch.benchmarks.index_speed import make_photos


def load() -> float:
    return round(os.getloadavg()[0], 2)


def synthetic(url: Path, n: int, dim: int, shards: int, seed: int = 0, centres: int = 10_000,
              noise: float = 0.5) -> None:
    """Clustered unit vectors (a Gaussian mixture of `centres` centres), written as `cluster embed`
    writes them: float16 shards and parquet metadata, each shard's paths `/data/sS/I.jpg`."""
    from jrsearch.retrieval.cluster.dataset import DatasetPlan, DatasetWriter, item_id
    from jrsearch.retrieval.encoders import TINY_TEST_MODEL

    rng = np.random.default_rng(seed)
    per = n // shards
    writer = DatasetWriter(str(url), DatasetPlan(TINY_TEST_MODEL, dim, shards, per, ["synthetic"], n))
    means = rng.standard_normal((centres, dim)).astype(np.float32)
    for s in range(shards):
        x = means[rng.integers(0, centres, per)] + noise * rng.standard_normal((per, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        writer.write_shard(s, x, {"image_path": [f"/data/s{s}/{i}.jpg" for i in range(per)],
                                  "caption": [f"caption {s}-{i}" for i in range(per)], "size": [1] * per,
                                  "width": [8] * per, "height": [8] * per, "mtime_ns": [None] * per,
                                  "id": [item_id(s, i) for i in range(per)]}, {"items": per})


def _cli(args: list[str]) -> tuple[float, dict]:
    """Run one `jrsearch` command in a fresh process (as a user does): wall seconds, its --json."""
    import subprocess
    import sys

    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jrsearch.cli.main", *args, "--json"], capture_output=True, text=True,
                          check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - started, json.loads(done.stdout)


def bench_embed(work: Path, images: int, repeats: int, address: str) -> dict:
    """Both commands as a user runs them (fresh process: imports, model load, the job), alternating;
    one small untimed run of each first, so neither pays for first-time worker start or disk cache."""
    photos = work / "photos"
    make_photos(photos, images)
    warm = work / "warm"
    make_photos(warm, 64, seed=1)
    model = ["--model", "tiny-test", "--pretrained", "none"]
    _cli(["index", str(warm), "--library", str(work / "warm-lib"), *model])
    _cli(["cluster", "embed", str(warm), "--out", str(work / "warm-ds"), "--address", address, *model])
    single, cluster = [], []
    for r in range(repeats):
        library_dir, dataset_dir = work / f"lib{r}", work / f"ds{r}"
        before = load()
        seconds, report = _cli(["index", str(photos), "--library", str(library_dir), *model])
        single.append({"images_per_s": round(report["indexed"] / seconds, 1), "seconds": round(seconds, 2),
                       "load": before})
        before = load()
        seconds, report = _cli(["cluster", "embed", str(photos), "--out", str(dataset_dir), "--shard-size", "500",
                                "--address", address, *model])
        cluster.append({"images_per_s": round(report["embedded"] / seconds, 1), "seconds": round(seconds, 2),
                        "job_images_per_s": report["images_per_s"], "load": before, "actors": report["actors"]})
        shutil.rmtree(library_dir)
        shutil.rmtree(dataset_dir)
    s = statistics.median(x["images_per_s"] for x in single)
    c = statistics.median(x["images_per_s"] for x in cluster)
    return {"images": images, "single_images_per_s": s, "cluster_images_per_s": c, "ratio": round(c / s, 3),
            "target_ratio": 0.8, "single_runs": single, "cluster_runs": cluster}


def bench_build(work: Path, vectors: int, dim: int, factory: str | None, address: str) -> dict:
    from jrsearch.indexer.cluster.build import BuildOptions, build_single, run_build
    from jrsearch.retrieval.cluster.dataset import EmbeddingDataset
    from jrsearch.retrieval.cluster.index_dir import IndexDir

    data = work / "vectors"
    synthetic(data, vectors, dim, shards=2)
    before = load()
    single = build_single(str(data), work / "single", BuildOptions(factory=factory, threads=2))
    middle = load()
    dist = run_build(str(data), work / "merged", BuildOptions(factory=factory, serving_shards=1, address=address,
                                                              threads=2))
    queries = EmbeddingDataset.open(str(data)).sample(1000, seed=1)
    same = bool(np.array_equal(IndexDir(work / "single").search(queries, 10)[1],
                               IndexDir(work / "merged").search(queries, 10)[1]))
    return {"vectors": vectors, "dim": dim, "factory": single.factory, "add_workers": 2,
            "single_seconds": single.seconds, "distributed_seconds": dist.seconds,
            "ratio": round(dist.seconds["total"] / single.seconds["total"], 3), "target_ratio": 1.3,
            "identical_results": same, "load_before_single": before, "load_before_distributed": middle}


def _latencies(search, queries: np.ndarray, k: int = 10) -> list[float]:
    out = []
    for q in queries:
        started = time.perf_counter()
        search(q[None], k)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle_cpu(router, seconds: float = 3.0) -> float:
    """CPU cores the router's shard actors use, together, while no query arrives."""
    import ray

    pids = ray.get([actor.pid.remote() for actor in router.actors])
    before = sum(_cpu_seconds(pid) for pid in pids)
    time.sleep(seconds)
    return round((sum(_cpu_seconds(pid) for pid in pids) - before) / seconds, 2)


def bench_search(work: Path, vectors: int, dim: int, factory: str | None, address: str, n_queries: int,
                 rounds: int) -> dict:
    """Merged in process, 2 shards in process, and 2 shards as Ray actors behind the router, both
    through the compiled graph and through plain actor calls; the variants take turns in each round
    (one router alive at a time: compiled-graph actors poll, which would slow the others)."""
    import faiss

    from jrsearch.indexer.cluster.build import BuildOptions, run_build
    from jrsearch.retrieval.cluster.dataset import EmbeddingDataset
    from jrsearch.retrieval.cluster.index_dir import IndexDir
    from jrsearch.retrieval.cluster.router import ShardRouter

    if not (work / "merged").is_dir():  # the build part did not run: build the merged index alone
        synthetic(work / "vectors", vectors, dim, shards=2)
        run_build(str(work / "vectors"), work / "merged", BuildOptions(factory=factory, serving_shards=1,
                                                                       address=address, threads=2))
    faiss.omp_set_num_threads(1)  # as `jrsearch serve` searches: one query row, one thread
    run_build(str(work / "vectors"), work / "sharded", BuildOptions(factory=factory, serving_shards=2, address=address))
    queries = EmbeddingDataset.open(str(work / "vectors")).sample(n_queries, seed=2)
    merged, sharded = IndexDir(work / "merged"), IndexDir(work / "sharded")
    in_process = {"merged": merged.search, "sharded_in_process": sharded.search}
    for search in in_process.values():
        _latencies(search, queries[:50])  # warm: page in the lists the queries touch
    times: dict[str, list[float]] = {}
    idle: dict[str, list[float]] = {}
    same: dict[str, bool] = {}
    for _ in range(rounds):
        for name, search in in_process.items():
            times.setdefault(name, []).append(statistics.median(_latencies(search, queries)))
        for name, compiled in (("sharded_ray_compiled", True), ("sharded_ray_calls", False)):
            router = ShardRouter(work / "sharded", compiled=compiled)
            try:
                _latencies(router.search, queries[:50])
                times.setdefault(name, []).append(statistics.median(_latencies(router.search, queries)))
                idle.setdefault(name, []).append(_idle_cpu(router))
                same[name] = bool(np.array_equal(merged.search(queries, 10)[1], router.search(queries, 10)[1]))
            finally:
                router.close()
    p50 = {name: round(statistics.median(t), 3) for name, t in times.items()}
    figures: dict[str, dict] = {name: {"p50_ms": p50[name], "p50_ms_per_round": [round(x, 3) for x in t]}
                                for name, t in times.items()}
    for name, cores in idle.items():
        figures[name]["idle_actor_cores"] = statistics.median(cores)
    ratios = {f"ratio_{name}": round(p50[name] / p50["merged"], 3) for name in times if name != "merged"}
    return {"vectors": vectors, "dim": dim, "queries": n_queries, "k": 10, "rounds": rounds,
            "factory": merged.manifest.factory, **figures, **ratios,
            "target_ratio": 2.0, "same_ids_as_merged": same, "load": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64, help="synthetic vector dimension")
    parser.add_argument("--factory", default=None,
                        help="index for the build and search parts (default: what `cluster build` chooses)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--parts", default="embed,build,search")
    parser.add_argument("--out", type=Path, default=Path("results/cluster.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    address = ray.get_runtime_context().gcs_address
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "ray": ray.__version__, "note": "2-core machine shared with other jobs"},
                    "cluster_start_s": round(time.perf_counter() - started, 2)}
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="jrsearch-cluster-bench-") as tmp:
        work = Path(tmp)
        if "embed" in parts:
            result["embed"] = bench_embed(work, args.images, args.repeats, address)
            print(json.dumps(result["embed"]), flush=True)
        if "build" in parts:
            result["build"] = bench_build(work, args.vectors, args.dim, args.factory, address)
            print(json.dumps(result["build"]), flush=True)
        if "search" in parts:
            result["search"] = bench_search(work, args.vectors, args.dim, args.factory, address, args.queries,
                                            args.repeats)
            print(json.dumps(result["search"]), flush=True)
    ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
