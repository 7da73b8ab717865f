"""GPU check, under 5 minutes on one GPU: faiss-gpu IVF-PQ against the CPU build, and fp16 indexing speed.

    python -m jrsearch.benchmarks.gpu_check                 # needs faiss-gpu (pip install -e ".[gpu]") and CUDA torch

1. The same 1M clustered 512-d unit vectors (benchmarks/scale.py's set), indexed as
   `OPQ64,IVF4096,PQ64` twice through `VectorIndex.build_from`: on the CPU, and with k-means and
   the coarse assignment on the GPU. Build seconds; recall@10 of each against exact search (a
   GPU flat index) on 1,000 queries, codes only and with the default float16 re-ranking; the
   GPU build also searched on the GPU (`VectorIndex.to_gpu`, as `bench --index` does).
2. fp16 ViT-B-32 (random weights: the same compute as trained ones) through the real indexing
   pipeline (`run_index`: walk, hash, decode on threads, embed, commit, build the index) on
   generated 640x480 JPEGs, images/s, against the model's forward pass alone.

Writes results/gpu_check.json. On a machine without a GPU visible to faiss it prints one line and
exits at once. Written without a GPU to hand: nothing here has run on one yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def gpu_or_exit() -> None:
    try:
        import faiss
    except ImportError:
        sys.exit("gpu_check: faiss is not installed; pip install -e '.[gpu]' on a CUDA 12 machine")
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        print("gpu_check: no GPU visible to faiss (a faiss-cpu build, or no CUDA device); nothing to measure")
        sys.exit(0)


def recall_at_10(got: np.ndarray, want: np.ndarray) -> float:
    return round(float(np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])), 4)


def index_check(n: int, n_queries: int, factory: str) -> dict:
    import faiss

    from jrsearch.benchmarks.scale import VectorSet
    from jrsearch.retrieval.index import ArraySource, VectorIndex

    vectors = VectorSet("clustered", 512, 10_000, 0.6)
    data = np.concatenate(list(vectors.chunks(n)))
    ids = np.arange(n, dtype=np.int64)
    source = ArraySource(ids, data.astype(np.float16))
    queries = vectors.draw(n_queries, np.random.default_rng(7))
    exact = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(512))
    exact.add(data)
    want = exact.search(queries, 10)[1]
    del exact
    out: dict = {"vectors": n, "queries": n_queries, "factory": factory}
    for name, use_gpu in (("cpu", False), ("gpu", True)):
        started = time.perf_counter()
        index = VectorIndex.build_from(source, factory, use_gpu=use_gpu)
        built = time.perf_counter() - started
        codes_only = index.search(queries, 10, rerank=0)[1]
        row = {"build_s": round(built, 1), "recall_at_10_codes_only": recall_at_10(codes_only, want),
               "recall_at_10_reranked": recall_at_10(index.search(queries, 10)[1], want)}
        started = time.perf_counter()
        for query in queries[:200]:
            index.search(query[None, :], 10)
        row["cpu_search_ms_per_query"] = round((time.perf_counter() - started) * 1000 / 200, 3)
        if use_gpu:
            on_gpu = index.to_gpu()
            started = time.perf_counter()
            got = on_gpu.search(queries, 10, rerank=0)[1]
            row["gpu_search_batch_ms"] = round((time.perf_counter() - started) * 1000, 1)
            row["gpu_search_recall_at_10_codes_only"] = recall_at_10(got, want)
        out[name] = row
    return out


def indexing_speed(images: int, batch_size: int, workers: int) -> dict:
    import torch

    from jrsearch.benchmarks.index_speed import make_photos, model_only
    from jrsearch.indexer.pipeline import IndexOptions, run_index
    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.types import ModelSpec

    spec = ModelSpec("ViT-B-32", "")
    with tempfile.TemporaryDirectory() as work:
        photos = Path(work) / "photos"
        paths = make_photos(photos, images)
        encoder = load_encoder(spec, device="cuda", precision="fp16")
        ceiling = model_only(encoder, paths, batch_size)
        library = Library.open(Path(work) / "lib", create=True)
        torch.cuda.synchronize()
        started = time.perf_counter()
        report = run_index(library, encoder, [photos], IndexOptions(batch_size=batch_size, workers=workers))
        seconds = time.perf_counter() - started
        library.close()
    return {"model": "ViT-B-32 (random weights)", "precision": "fp16", "images": images, "indexed": report.indexed,
            "pipeline_images_per_s": round(images / seconds, 1), "model_only_images_per_s": round(ceiling, 1),
            "gpu": torch.cuda.get_device_name(0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--factory", default="OPQ64,IVF4096,PQ64")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("results/gpu_check.json"))
    args = parser.parse_args()
    gpu_or_exit()
    report = {"index": index_check(args.vectors, args.queries, args.factory)}
    print(json.dumps(report), flush=True)
    report["indexing"] = indexing_speed(args.images, args.batch_size, args.workers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
