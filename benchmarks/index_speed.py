"""Indexing throughput against the model-only ceiling, warm query latency, peak RSS.

    python -m benchmarks.index_speed --images 500 --model ViT-B-32 --pretrained none
    python -m benchmarks.index_speed --images 100 --model xlm-roberta-base-ViT-B-32-shape --repeats 1

Generates N photo-sized JPEGs, then, back to back and `--repeats` times:
  * ceiling: the model's forward pass alone over the same batches, inputs already decoded;
  * pipeline: `run_index` into a fresh library (walk, hash, decode on threads, embed, commit,
    write the index), and the same plus loading the model (`load_encoder`).
Prints and saves JSON (medians, all runs). Random weights (`--pretrained none`) cost the same
compute as trained ones, so speed figures hold for the real model.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_photos(root: Path, count: int, size=(640, 480), seed: int = 0) -> list[Path]:
    """Smooth gradients, shapes and grain, saved as quality-90 JPEGs: decode cost like real photos."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    for i in range(count):
        base = np.stack([(xx * rng.uniform(0.1, 0.5) + yy * rng.uniform(0.1, 0.5) + rng.uniform(0, 255)) % 256
                         for _ in range(3)], axis=-1)
        base += rng.normal(0, 12, base.shape)
        image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
            draw.ellipse([x, y, x + rng.integers(20, 200), y + rng.integers(20, 200)],
                         fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        path = root / f"photo_{i:05d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def model_only(encoder, paths: list[Path], batch_size: int) -> float:
    """Images/s of encode_images alone, on inputs decoded beforehand (the ceiling)."""
    import torch
    from retrieval.imageio import open_image

    tensors = [encoder.image_transform(open_image(p, draft_size=encoder.image_size)) for p in paths]
    batches = [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]
    encoder.encode_images(batches[0][:2])  # warm-up
    started = time.perf_counter()
    for batch in batches:
        encoder.encode_images(batch)
    return len(paths) / (time.perf_counter() - started)


def pipeline(spec, precision: str, photos: Path, count: int, batch_size: int, workers: int) -> tuple[float, float]:
    """(images/s without model load, images/s with model load) for one fresh index run."""
    from indexer.pipeline import IndexOptions, run_index
    from retrieval.encoders import load_encoder
    from retrieval.library import Library

    with tempfile.TemporaryDirectory() as lib_dir:
        started = time.perf_counter()
        encoder = load_encoder(spec, device="cpu", precision=precision)
        loaded = time.perf_counter()
        library = Library.open(Path(lib_dir), create=True)
        report = run_index(library, encoder, [photos], IndexOptions(batch_size=batch_size, workers=workers))
        done = time.perf_counter()
        library.close()
    assert report.indexed == count, report.to_json()
    return count / (done - loaded), count / (done - started)


def query_latency(spec, precision: str, photos: Path, queries: int) -> dict:
    from indexer.pipeline import run_index
    from retrieval.encoders import load_encoder
    from retrieval.engine import SearchEngine
    from retrieval.library import Library
    from retrieval.query_model import export_text_tower

    encoder = load_encoder(spec, device="cpu", precision=precision)
    with tempfile.TemporaryDirectory() as lib_dir:
        library = Library.open(Path(lib_dir), create=True)
        run_index(library, encoder, [photos])
        export_text_tower(encoder, library.root)  # as `jrsearch index` does: queries use the numpy tower
        engine = SearchEngine(library)
        engine.search(engine.embed_text("warm up"), top_k=10)
        times = []
        for i in range(queries):
            started = time.perf_counter()
            engine.search(engine.embed_text(f"a photo of thing number {i}"), top_k=10)
            times.append((time.perf_counter() - started) * 1000)
        library.close()
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)}


def main() -> None:
    import torch
    from retrieval.encoders import load_encoder
    from retrieval.types import ModelSpec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none", help="'none' = random weights (same speed)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    from retrieval.encoders.openclip import register_model_configs

    register_model_configs(Path(__file__).resolve().parent / "model_configs")  # e.g. xlm-roberta-base-ViT-B-32-shape
    spec = ModelSpec(args.model, "" if args.pretrained == "none" else args.pretrained)
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        paths = make_photos(photos, args.images)
        encoder = load_encoder(spec, device="cpu", precision=args.precision)
        ceilings, pipes, pipes_with_load = [], [], []
        for _ in range(args.repeats):  # back to back, so machine noise hits both alike
            ceilings.append(model_only(encoder, paths, args.batch_size))
            without_load, with_load = pipeline(spec, args.precision, photos, args.images, args.batch_size, args.workers)
            pipes.append(without_load)
            pipes_with_load.append(with_load)
            print(f"model-only {ceilings[-1]:.2f} img/s | pipeline {pipes[-1]:.2f} img/s "
                  f"(with model load {pipes_with_load[-1]:.2f})", flush=True)
        del encoder
        latency = query_latency(spec, args.precision, photos, args.queries)

    ceiling = statistics.median(ceilings)
    result = {
        "benchmark": "index_speed",
        "model": spec.label() or spec.name, "precision": args.precision, "images": args.images,
        "image_size": "640x480 JPEG", "batch_size": args.batch_size, "decode_workers": args.workers,
        "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "model_only_images_per_s": round(ceiling, 2),
        "pipeline_images_per_s": round(statistics.median(pipes), 2),
        "pipeline_with_model_load_images_per_s": round(statistics.median(pipes_with_load), 2),
        "ratio": round(statistics.median(pipes) / ceiling, 3),
        "ratio_with_model_load": round(statistics.median(pipes_with_load) / ceiling, 3),
        "runs": {"model_only": [round(x, 2) for x in ceilings], "pipeline": [round(x, 2) for x in pipes],
                 "pipeline_with_model_load": [round(x, 2) for x in pipes_with_load]},
        "query_latency_warm": latency,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": {"cpu_count": __import__("os").cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"index_speed_{args.model}_{args.precision}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
