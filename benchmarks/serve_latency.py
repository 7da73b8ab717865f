"""Warm text-query latency of `jrsearch serve` through HTTP, and requests per second under load.

For each library size it generates a library of random unit vectors (written through
`Library.write`, as the indexer does, and kept for the next run), starts `jrsearch serve` on a
free loopback port in its own process, then measures from this process over HTTP:

- latency: sequential warm text queries (each a different string), p50/p95/p99;
- throughput: `--concurrency` clients in threads, each sending its next query as soon as the
  last one is answered, for `--seconds`; requests per second and the latencies seen meanwhile.

The default model is ViT-B-32 (the default model's architecture and 512-d vectors) with random
weights, so no download is needed and the text tower costs what the real one costs.

    python -m jrsearch.benchmarks.serve_latency                       # 10k and 100k vectors
    python -m jrsearch.benchmarks.serve_latency --sizes 10000 --requests 100 --seconds 5

Writes results/serve_latency.json (and prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

WORDS = ("dog", "cat", "beach", "mountain", "city", "night", "snow", "red", "car", "child", "boat", "forest",
         "kitchen", "bird", "flower", "street", "river", "sunset", "horse", "train")
WRITE_BATCH = 5000


def queries(n: int, seed: int) -> Iterator[str]:
    """n different short queries ("a red dog beach 17"), made as they are asked for."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield f"a {' '.join(rng.choice(WORDS, 3))} {i}"


def percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"n": 0}
    a = np.asarray(ms)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "mean_ms": round(float(a.mean()), 2)}


def build_library(root: Path, n: int, model: str, dim: int) -> dict:
    """A library of n random unit vectors (reused when it already holds exactly n)."""
    from jrsearch.retrieval.library import FileRecord, Library
    from jrsearch.retrieval.types import ItemStatus, MediaKind, ModelSpec

    if (root / "library.db").exists():
        library = Library.open(root)
        info = library.status()["indexes"].get("image", {})
        if info.get("vectors") == n and info.get("up_to_date") and library.model() == (ModelSpec(model, ""), dim):
            return {"reused": True, "factory": info["factory"]}
        library.close()
        raise SystemExit(f"{root} holds another library; remove it or pass another --workdir")
    started = time.perf_counter()
    library = Library.open(root, create=True)
    library.adopt_model(ModelSpec(model, ""), dim)
    rng = np.random.default_rng(n)
    for first in range(0, n, WRITE_BATCH):
        count = min(WRITE_BATCH, n - first)
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        library.write([FileRecord(path=f"/bench/{first + i:07d}.jpg", kind=MediaKind.IMAGE, size=1, mtime_ns=0,
                                  content_hash=None, status=ItemStatus.INDEXED, vectors=vectors[i:i + 1])
                       for i in range(count)])
    written = time.perf_counter()
    library.save_indexes()
    factory = library.status()["indexes"]["image"]["factory"]
    library.close()
    return {"reused": False, "factory": factory, "write_s": round(written - started, 1),
            "index_build_s": round(time.perf_counter() - written, 1)}


def prepare_text_path(root: Path, model: str, text_path: str) -> None:
    """`tower`: export the numpy text tower as `jrsearch index` does; `torch`: remove any export."""
    import shutil

    from jrsearch.retrieval.query_model import EXPORT_DIR, export_text_tower
    from jrsearch.retrieval.types import ModelSpec

    if text_path == "torch":
        shutil.rmtree(root / EXPORT_DIR, ignore_errors=True)
        return
    from jrsearch.retrieval.encoders import load_encoder

    if not export_text_tower(load_encoder(ModelSpec(model, ""), device="cpu", backend="torch"), root):
        raise SystemExit(f"{model} has no numpy text tower export; pass --text-path torch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(library: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "jrsearch.cli.main", "serve", "--library", str(library),
                             "--port", str(port)],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_ready(client, server: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"jrsearch serve exited ({server.returncode}):\n{log.read_text()[-2000:]}")
        try:
            if client.get("/api/status").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("jrsearch serve did not answer in time")


def timed_query(client, text: str, top_k: int) -> tuple[float, dict]:
    """(client-side latency ms, the server's response) of one text query."""
    started = time.perf_counter()
    response = client.get("/api/search", params={"q": text, "top_k": top_k})
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response.json()


def measure_sequential(client, n: int, top_k: int) -> dict:
    for text in queries(20, seed=1):  # warm-up: model, allocator, connection
        timed_query(client, text, top_k)
    client_ms, bodies = zip(*(timed_query(client, text, top_k) for text in queries(n, seed=2)), strict=True)
    assert all(len(body["results"]) == top_k for body in bodies)
    return {**percentiles(list(client_ms)),
            **{f"server_{part}": percentiles([body[f"{part}_ms"] for body in bodies])
               for part in ("took", "embed", "search")}}


def measure_load(base_url: str, concurrency: int, seconds: float, top_k: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client_loop(worker: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for text in queries(100_000, seed=100 + worker):
                if time.perf_counter() >= stop:
                    return
                try:
                    ms, _ = timed_query(client, text, top_k)
                except httpx.HTTPError:
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    latencies.append(ms)

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "seconds": round(elapsed, 2), "requests": len(latencies), "errors": errors[0],
            "rps": round(len(latencies) / elapsed, 1), "latency": percentiles(latencies)}


def bench_size(n: int, args: argparse.Namespace) -> dict:
    import httpx

    root = args.workdir / f"lib-{args.model}-{args.dim}-{n}"
    built = build_library(root, n, args.model, args.dim)
    prepare_text_path(root, args.model, args.text_path)
    before = round(os.getloadavg()[0], 2)
    port = free_port()
    log = args.workdir / f"serve-{n}.log"
    started = time.perf_counter()
    server = start_server(root, port, log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client, server, log)
            startup_s = round(time.perf_counter() - started, 1)
            sequential = measure_sequential(client, args.requests, args.top_k)
        load = measure_load(f"http://127.0.0.1:{port}", args.concurrency, args.seconds, args.top_k)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"vectors": n, "library": built, "server_startup_s": startup_s, "text_query": sequential, "load": load,
            "load_average_1m": {"before": before, "after": round(os.getloadavg()[0], 2)}}  # other work on the CPUs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--dim", type=int, default=512, help="the model's embedding size")
    parser.add_argument("--requests", type=int, default=300, help="sequential warm queries per size")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the load test per size")
    parser.add_argument("--top-k", type=int, default=24)
    parser.add_argument("--text-path", choices=("tower", "torch"), default="tower",
                        help="tower: the numpy text tower `jrsearch index` exports (default); torch: open_clip")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "jrsearch-serve-bench")
    parser.add_argument("--out", type=Path, default=Path("results/serve_latency.json"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    report = {
        "benchmark": "serve_latency",
        "model": f"{args.model} (random weights), {args.dim}-d",
        "text_path": args.text_path,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "top_k": args.top_k,
        "sizes": [bench_size(n, args) for n in args.sizes],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
