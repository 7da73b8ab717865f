"""`jrsearch duplicates` at scale: the k-nearest-neighbour pass over N synthetic vectors with planted copies.

    python -m jrsearch.benchmarks.duplicates --vectors 1000000

The vectors are `scale.py`'s clustered set (a Gaussian mixture of 10,000 centres, cosine ~0.74
between two points of one centre), of which `--planted` (1 %) are followed by a near copy: the
same vector plus noise of norm `--copy-noise` (0.15: cosine ~0.99, like a resized or recompressed
photo under a real CLIP model). The index is the type a library of N vectors gets
(`choose_factory` under the default 1 GiB budget: IVF with SQ8 codes at 1M), built over the vectors
in RAM, its coarse quantizer trained on `--train` vectors (default 65,536: fewer than a library's
build uses, to keep a benchmark on a shared 2-core machine short; the build is timed apart:
`jrsearch index` pays it, not `duplicates`). Measured: the
pass itself (`duplicates.find_duplicates`: batched index searches, pairs, connected components),
wall and CPU seconds and peak RSS, and the precision and recall of the planted pairs at the
default threshold. Writes results/duplicates-N.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared cores: spinning OpenMP threads cost 5-10x

import faiss
import numpy as np

from jrsearch.benchmarks.output import print_and_save
from jrsearch.benchmarks.scale import DIM, VectorSet
from jrsearch.retrieval.duplicates import DEFAULT_THRESHOLD, NEIGHBOURS, NPROBE, find_duplicates
from jrsearch.retrieval.index import ADD_BATCH, ArraySource, VectorIndex, choose_factory


def planted_set(n: int, planted: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, copy_of): n unit vectors whose last `planted` rows are near copies of random earlier
    ones; copy_of[i] is the row row i copies (-1: none)."""
    base = np.concatenate(list(VectorSet("clustered", DIM, 10_000, 0.6, seed).chunks(n - planted)))
    rng = np.random.default_rng(seed + 1)
    originals = rng.choice(n - planted, planted, replace=False)
    copies = base[originals] + rng.standard_normal((planted, DIM), dtype=np.float32) * (noise / np.sqrt(DIM))
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    copy_of = np.full(n, -1, np.int64)
    copy_of[n - planted:] = originals
    return np.concatenate([base, copies]), copy_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--planted", type=float, default=0.01, help="share of vectors that are near copies")
    parser.add_argument("--copy-noise", type=float, default=0.15)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--train", type=int, default=65_536, help="vectors the index is trained on")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    n, planted = args.vectors, int(args.vectors * args.planted)
    vectors, copy_of = planted_set(n, planted, args.copy_noise)
    ids = np.arange(n, dtype=np.int64)
    source = ArraySource(ids, vectors)
    started, cpu_started = time.perf_counter(), time.process_time()
    factory = choose_factory(n, DIM)
    index = VectorIndex(faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT), factory, source=source)
    index.train(source.sample(min(n, args.train)))
    for batch_ids, batch in source.batches(ADD_BATCH):
        index.add(batch, batch_ids)
    build = {"trained_on": index.trained_on, "build_s": round(time.perf_counter() - started, 1),
             "build_cpu_s": round(time.process_time() - cpu_started, 1)}

    def fetch_rows(vector_ids: list[int]) -> list[tuple]:  # `Catalog.hits`'s shape: one item per vector
        return [(v, v, None, None, None, f"/v/{v:08d}", "image", None, None, None, None, None, None, None)
                for v in vector_ids]

    started, cpu_started = time.perf_counter(), time.process_time()
    groups = find_duplicates(index, source, fetch_rows, args.threshold)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    found = {(int(a[3:]), int(b[3:])) for g in groups for a, b, _ in g.pairs}
    truth = {(int(copy_of[i]), i) for i in range(n - planted, n)}
    hits = len(found & truth)
    result = {
        "vectors": n, "dim": DIM, "planted_copies": planted, "copy_noise": args.copy_noise,
        "threshold": args.threshold, "neighbours": NEIGHBOURS, "nprobe": NPROBE, "factory": index.factory, **build,
        "pass_s": round(seconds, 1), "pass_cpu_s": round(cpu_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "groups": len(groups), "pairs_found": len(found),
        "precision": round(hits / max(1, len(found)), 4), "recall": round(hits / len(truth), 4),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "note": "a shared 2-core machine: CPU seconds are the steadier figure",
    }
    print_and_save(result, args.out, f"duplicates-{n}")


if __name__ == "__main__":
    main()
