"""Bulk vector writes through `Library.write`: vectors per second and bytes on disk per vector.

Random 512-d unit vectors, written as `benchmarks/serve_latency.py` writes them (calls of 5,000
one-vector files). Wall clock and the writer's CPU time are both reported: on a shared machine
the CPU time is the steadier figure. To compare with another version of jrsearch, run the same
file with that version first on the path:

    python -m jrsearch.benchmarks.write_speed --vectors 1000000
    git archive 64e21f4 retrieval | tar -x -C /tmp/old && PYTHONPATH=/tmp/old python benchmarks/write_speed.py

Writes results/write_speed.json (and prints it). The library is made in a temporary folder under
--workdir and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

WRITE_BATCH = 5000


def measure(n: int, dim: int, workdir: Path) -> dict:
    from jrsearch.retrieval.library import FileRecord, Library
    from jrsearch.retrieval.types import ItemStatus, MediaKind, ModelSpec

    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=workdir))
    try:
        library = Library.open(folder / "lib", create=True)
        library.adopt_model(ModelSpec("ViT-B-32", ""), dim)
        rng = np.random.default_rng(n)
        wall = cpu = 0.0
        for first in range(0, n, WRITE_BATCH):
            count = min(WRITE_BATCH, n - first)
            vectors = rng.standard_normal((count, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            records = [FileRecord(path=f"/bench/{first + i:08d}.jpg", kind=MediaKind.IMAGE, size=1, mtime_ns=0,
                                  content_hash=None, status=ItemStatus.INDEXED, vectors=vectors[i:i + 1])
                       for i in range(count)]
            started, started_cpu = time.perf_counter(), time.process_time()
            library.write(records)
            wall += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
        library.close()
        files = {str(p.relative_to(folder / "lib")): p.stat().st_size for p in (folder / "lib").rglob("*")
                 if p.is_file()}
    finally:
        shutil.rmtree(folder)
    return {"vectors": n, "dim": dim, "write_wall_s": round(wall, 2), "write_cpu_s": round(cpu, 2),
            "vectors_per_s_wall": round(n / wall), "vectors_per_s_cpu": round(n / cpu),
            "bytes_per_vector": round(sum(files.values()) / n), "files": files,
            "load_average": os.getloadavg(), "cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path("results") / "write_speed")
    parser.add_argument("--out", type=Path, default=Path("results") / "write_speed.json")
    args = parser.parse_args()
    report = measure(args.vectors, args.dim, args.workdir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
