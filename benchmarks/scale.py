"""A library of N synthetic 512-d vectors, end to end: write, build, disk, serve RSS, latency, recall.

    python -m jrsearch.benchmarks.scale --vectors 1000000 --set clustered
    python -m jrsearch.benchmarks.scale --vectors 1000000 --set uniform
    python -m jrsearch.benchmarks.scale --vectors 1000000 --set clustered --reuse --compare-flat   # vs IVF-Flat

Vector sets (unit-normalised, generated chunk by chunk so N never sits in RAM):
- clustered: a Gaussian mixture of `--centres` (10,000) centres, closer to real CLIP embeddings;
- uniform: random directions, the worst case for any inverted-file index.

Measured:
- write: vectors/s through `Library.write` (one file record per vector, `--batch` records per call,
  as the indexer writes);
- build: `Library.save_indexes()` from the stored vectors (train on a sample, add in batches),
  wall and CPU seconds (CPU time is the figure that survives a shared machine) and peak RSS;
- disk: bytes per vector over every file of the library;
- serve: VmRSS of a fresh `jrsearch serve` once it answers /api/status, and again after 200 warm
  HTTP text queries (the ViT-B-32 text tower with random weights: the default model's compute);
- open: RSS growth of a fresh process opening the index file memory-mapped (as `serve` and
  `query` do) and read in full;
- search: warm `library.index("image").search` p50/p95 at k=10, one query at a time, with the
  default nprobe and re-rank depth (the path `jrsearch query` and `serve` take);
- recall@10 of that search against exact search by brute force over the stored vectors, on
  `--queries` (1,000) fresh queries from the same distribution.

Writes results/scale-SET-N.json and prints it. The library is kept under --workdir for reruns
(`--reuse`); delete it when done (N x ~1.1 KB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared cores: spinning OpenMP threads cost 5-10x

import numpy as np

from jrsearch.benchmarks.serve_latency import (
    free_port,
    percentiles,
    queries,
    start_server,
    wait_ready,
)
from jrsearch.retrieval.paths import index_path

MODEL, DIM = "ViT-B-32", 512
CHUNK = 50_000  # vectors generated at a time


class VectorSet:
    """Deterministic unit vectors, chunk by chunk: the same N for the same (name, seed)."""

    def __init__(self, name: str, dim: int, centres: int, spread: float, seed: int = 0) -> None:
        self.name, self.dim, self.spread, self.seed = name, dim, spread, seed
        means = np.random.default_rng(seed).standard_normal((centres, dim)).astype(np.float32)
        self.means = means / np.linalg.norm(means, axis=1, keepdims=True)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal((n, self.dim), dtype=np.float32)
        if self.name == "uniform":
            vectors = noise
        else:  # a point is its centre plus noise of norm ~spread: cosine ~0.86 to its centre at 0.6
            vectors = self.means[rng.integers(0, len(self.means), n)] + noise * (self.spread / np.sqrt(self.dim))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def chunks(self, n: int) -> Iterator[np.ndarray]:
        for index, first in enumerate(range(0, n, CHUNK)):
            yield self.draw(min(CHUNK, n - first), np.random.default_rng([self.seed, index]))


def write_library(root: Path, vectors: VectorSet, n: int, batch: int) -> dict:
    from jrsearch.retrieval.library import FileRecord, Library
    from jrsearch.retrieval.types import ItemStatus, MediaKind, ModelSpec

    library = Library.open(root, create=True)
    library.adopt_model(ModelSpec(MODEL, ""), DIM)
    written, seconds, cpu_seconds = 0, 0.0, 0.0
    for chunk in vectors.chunks(n):
        for first in range(0, len(chunk), batch):
            part = chunk[first:first + batch]
            records = [FileRecord(path=f"/scale/{written + i:08d}.jpg", kind=MediaKind.IMAGE, size=1, mtime_ns=0,
                                  content_hash=None, status=ItemStatus.INDEXED, vectors=part[i:i + 1])
                       for i in range(len(part))]
            started, cpu_started = time.perf_counter(), time.process_time()
            with library.writing():
                library.write(records)
            seconds += time.perf_counter() - started
            cpu_seconds += time.process_time() - cpu_started
            written += len(part)
    library.close()
    return {"write_s": round(seconds, 1), "write_vectors_per_s": round(n / seconds),
            "write_cpu_s": round(cpu_seconds, 1), "write_vectors_per_cpu_s": round(n / cpu_seconds)}


def build_index(root: Path) -> dict:
    from jrsearch.retrieval.library import Library

    library = Library.open(root)
    library.indexes.retrain("image")  # from scratch, also when --reuse finds an index already built
    started, cpu_started = time.perf_counter(), time.process_time()
    library.save_indexes()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    info = index_info(library)
    library.close()
    return {"build_s": round(seconds, 1), "build_cpu_s": round(cpu_seconds, 1), **info,
            "build_peak_rss_mb": _peak_rss_mb()}


def index_info(library) -> dict:
    info = library.status()["indexes"]["image"]
    return {"factory": info["factory"], "trained_on": info.get("trained_on"),
            "index_memory_bytes": info.get("memory_bytes")}


def _peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def disk_usage(root: Path, n: int) -> dict:
    files = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
    total = sum(files.values())
    groups: dict[str, int] = {}
    for name, size in files.items():
        group = name.split("/")[0] if "/" in name else name
        groups[group] = groups.get(group, 0) + size
    return {"bytes_total": total, "bytes_per_vector": round(total / n, 1),
            "bytes_per_vector_by_part": {k: round(v / n, 1) for k, v in sorted(groups.items())}}


def vm_rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory in MB: VmRSS, or its RssAnon (own memory) / RssFile (mapped files,
    which the kernel can drop and re-read) parts."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def rss_parts(pid: int) -> dict:
    return {field: vm_rss_mb(pid, field) for field in ("VmRSS", "RssAnon", "RssFile")}


def serve_rss(root: Path, warm_queries: int) -> dict:
    """VmRSS of a fresh `jrsearch serve` after it answers /api/status, then after warm queries.

    The model's exports are made in the user cache first, as the `jrsearch index` run that filled a
    real library would have made them, so serve opens ONNX Runtime sessions and the numpy text
    tower without importing torch.
    """
    import httpx

    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.types import ModelSpec

    load_encoder(ModelSpec(MODEL, ""), device="cpu")
    port = free_port()
    log = root.parent / f"{root.name}-serve.log"
    server = start_server(root, port, log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            started = time.perf_counter()
            wait_ready(client, server, log)
            loaded = time.perf_counter() - started
            after_load = rss_parts(server.pid)
            latencies = []
            for text in queries(warm_queries, seed=1):
                t = time.perf_counter()
                client.get("/api/search", params={"q": text, "top_k": 10}).raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
            return {"serve_ready_s": round(loaded, 1), "serve_rss_after_load_mb": after_load["VmRSS"],
                    "serve_rss_after_warm_queries_mb": vm_rss_mb(server.pid),
                    "serve_rss_parts_after_load_mb": after_load,
                    "serve_rss_parts_after_warm_queries_mb": rss_parts(server.pid),
                    "serve_http_text_query": percentiles(latencies[len(latencies) // 4:])}
    finally:
        server.terminate()
        server.wait(timeout=30)


OPEN_RSS = """
import sys, faiss
from pathlib import Path
def rss():
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
before = rss()
index = faiss.read_index(sys.argv[1], faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if sys.argv[2] == "mmap" else 0)
print(round((rss() - before) / 1024, 1))
"""


def open_rss(root: Path) -> dict:
    """RSS growth (MB) of a fresh process opening the index file, memory-mapped and read in full."""
    import subprocess
    import sys

    path = str(index_path(root, "image"))
    return {f"index_open_rss_mb_{mode}": float(subprocess.run([sys.executable, "-c", OPEN_RSS, path, mode],
                                                              capture_output=True, text=True, check=True).stdout)
            for mode in ("mmap", "read")}


def exact_top(source, queries_: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k best inner products per query, by brute force over every stored vector."""
    best_scores = np.full((len(queries_), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries_), k), -1, dtype=np.int64)
    for ids, vectors in source.batches(1 << 16):
        scores = queries_ @ vectors.T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        merged_ids = np.concatenate([best_ids, ids[top]], axis=1)
        order = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
    return best_ids


def search_quality(root: Path, vectors: VectorSet, n_queries: int, nprobe: int | None, rerank: int | None,
                   sweep: tuple[int, ...] = ()) -> dict:
    from jrsearch.retrieval.library import Library

    library = Library.open(root)
    if nprobe:
        library.nprobe = nprobe
    index = library.index("image")
    assert index is not None, f"{root} has no image index"
    if rerank is not None:
        index.rerank = rerank
    sample = vectors.draw(n_queries, np.random.default_rng([vectors.seed, 999_999]))
    cached = root.parent / f"{root.name}-exact-top10-{n_queries}q.npy"  # the brute force costs minutes at 10M
    started = time.perf_counter()
    if cached.exists():
        want = np.load(cached)
    else:
        want = exact_top(library.shards.source("image"), sample, 10)
        np.save(cached, want)
    exact_s = time.perf_counter() - started
    rerank_point(index, sample, want)  # pages the lists in; the next pass is timed warm
    default = rerank_point(index, sample, want)
    result = {"nprobe": index.nprobe, "rerank": index.rerank_depth(), "recall_at_10": default["recall_at_10"],
              "search_k10": default["search_k10"], "exact_bruteforce_s": round(exact_s, 1)}
    if index.rerank_depth():
        result["rerank_sweep"] = [rerank_point(index, sample, want, depth) for depth in (0, *sweep)]
    library.close()
    return result


def rerank_point(index, sample: np.ndarray, want: np.ndarray, depth: int | None = None) -> dict:
    """Recall@10 and latency at one re-rank depth (0: the codes' own order; None: the index's default)."""
    got, latencies = np.full_like(want, -1), []
    for i, query in enumerate(sample):
        t = time.perf_counter()
        got[i] = index.search(query[None, :], 10, rerank=depth)[1][0]
        latencies.append((time.perf_counter() - t) * 1000)
    recall = float(np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)]))
    return {"rerank": index.rerank_depth(depth), "recall_at_10": round(recall, 4), "search_k10": percentiles(latencies)}


def flat_twin(index, source):
    """`IVF{nlist},Flat` with the same centroids and lists as `index` (the type jrsearch chose at 1M
    before): every list filled with its vectors' float32 rows, read from the source."""
    import faiss

    index._writable()  # lists read into RAM (kept alive by `index`)
    ivf = faiss.extract_index_ivf(index.index)
    lists = ivf.invlists
    assert lists is not None
    twin = faiss.IndexIVFFlat(ivf.quantizer, ivf.d, ivf.nlist, faiss.METRIC_INNER_PRODUCT)
    twin_lists = twin.invlists
    assert twin_lists is not None
    for list_no in range(ivf.nlist):
        size = lists.list_size(list_no)
        if size:
            ids = faiss.rev_swig_ptr(lists.get_ids(list_no), size).copy()
            rows = np.ascontiguousarray(source.get(ids), dtype=np.float32)
            twin_lists.add_entries(list_no, size, faiss.swig_ptr(ids), faiss.swig_ptr(rows.view(np.uint8)))
    twin.ntotal = ivf.ntotal
    twin.is_trained = True
    return twin


def compare_flat(root: Path, vectors: VectorSet, n_queries: int) -> dict:
    """The chosen index against its IVF-Flat twin, back to back in one process: p50/p95, recall@10."""
    from jrsearch.retrieval.index import VectorIndex
    from jrsearch.retrieval.library import Library

    library = Library.open(root)
    index = library.index("image")
    assert index is not None
    source = library.shards.source("image")
    twin = VectorIndex(flat_twin(index, source), f"IVF{index.layout.nlist},Flat", index.nprobe)
    sample = vectors.draw(n_queries, np.random.default_rng([vectors.seed, 999_999]))
    want = exact_top(source, sample, 10)
    runs = {"chosen": (index, None), "chosen_no_rerank": (index, 0), "ivf_flat_twin": (twin, None)}
    timings: dict[str, list[float]] = {name: [] for name in runs}
    found: dict[str, list[np.ndarray]] = {name: [] for name in runs}
    for _ in range(2):  # warm pass, then the timed one
        for times in timings.values():
            times.clear()
        for found_rows in found.values():
            found_rows.clear()
        for query in sample:
            for name, (candidate, rerank) in runs.items():
                t = time.perf_counter()
                found[name].append(candidate.search(query[None, :], 10, rerank=rerank)[1][0])
                timings[name].append((time.perf_counter() - t) * 1000)
    library.close()
    return {name: {"search_k10": percentiles(timings[name]),
                   "recall_at_10": round(float(np.mean([len(set(g) & set(w)) / 10
                                                        for g, w in zip(found[name], want, strict=True)])), 4)}
            for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--set", choices=("clustered", "uniform"), default="clustered")
    parser.add_argument("--centres", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=0.6, help="Noise norm around a centre (clustered).")
    parser.add_argument("--batch", type=int, default=5000, help="File records per Library.write call.")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--index-memory", help="Index RAM budget (JRSEARCH_INDEX_MEMORY), e.g. 4G for IVF-Flat at 1M.")
    parser.add_argument("--nprobe", type=int)
    parser.add_argument("--rerank", type=int)
    parser.add_argument("--rerank-sweep", default="",
                        help="Also measure recall and latency at these re-rank depths, e.g. 250,500,1000 (and 0).")
    parser.add_argument("--warm-queries", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path("results/scale-work"))
    parser.add_argument("--reuse", action="store_true", help="Reuse the written library (skip the write).")
    parser.add_argument("--skip-build", action="store_true",
                        help="With --reuse: measure the index the library already has (no rebuild).")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--compare-flat", action="store_true",
                        help="Only time the index against its IVF-Flat twin (same lists), back to back.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    if args.index_memory:
        os.environ["JRSEARCH_INDEX_MEMORY"] = args.index_memory  # the serve process inherits it too
    vectors = VectorSet(args.set, DIM, args.centres, args.spread)
    root = args.workdir / f"{args.set}-{args.vectors}"
    if args.compare_flat:
        comparison = compare_flat(root, vectors, args.queries)
        out = Path("results") / f"scale-{args.set}-{args.vectors}-vs-flat.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(comparison, indent=2))
        print(json.dumps(comparison, indent=2))
        return
    report: dict = {"vectors": args.vectors, "set": args.set, "dim": DIM,
                    "centres": args.centres if args.set == "clustered" else None,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "load_avg_at_start": os.getloadavg()}}
    if not (args.reuse and (root / "library.db").exists()):
        shutil.rmtree(root, ignore_errors=True)
        report.update(write_library(root, vectors, args.vectors, args.batch))
        print(json.dumps(report), flush=True)
    if args.reuse and args.skip_build:
        from jrsearch.retrieval.library import Library

        library = Library.open(root)
        report.update(index_info(library))
        library.close()
    else:
        report.update(build_index(root))
        print(json.dumps(report), flush=True)
    report.update(disk_usage(root, args.vectors))
    report.update(open_rss(root))
    report.update(search_quality(root, vectors, args.queries, args.nprobe, args.rerank,
                                 tuple(int(d) for d in args.rerank_sweep.split(",") if d)))
    print(json.dumps(report), flush=True)
    if not args.skip_serve:
        report.update(serve_rss(root, args.warm_queries))
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    suffix = f"-{args.index_memory}" if args.index_memory else ""
    out = args.out or Path("results") / f"scale-{args.set}-{args.vectors}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
