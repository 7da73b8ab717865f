"""`jrsearch index` from a fresh process against the ONNX Runtime forward-only ceiling.

    python -m jrsearch.benchmarks.index_speed --images 512 --model ViT-B-32 --pretrained none
    python -m jrsearch.benchmarks.index_speed --photos /tmp/corpus/images --model ViT-B-32-256 --checkpoint ck.pt

Uses `--photos DIR` or generates N photo-sized JPEGs, loads the model once (so the one-time
ONNX export into the model cache is not timed), then, back to back and `--repeats` times:
  * ceilings: the forward pass alone over the same images, decoded and preprocessed beforehand,
    handed over `--batch-size` at a time (each encoder splits them into the batches it was tuned
    to): ONNX Runtime fp32 (the issue's ceiling), and the runtime that `jrsearch index` itself
    picks for `--precision`/`--backend` (for fp32 on a CPU, whichever `tuning` measured faster);
  * index: the real `jrsearch index PHOTOS` command into a fresh library, in a fresh process:
    start-up, imports, model load, walk, hash, decode on threads, embed, commit, write indexes;
  * re-run: the same command again, nothing changed (walk and stat only; no model is opened);
  * cold query: `jrsearch query TEXT` in a fresh process.
Prints and saves JSON (medians, all runs, the load average). Random weights cost the same
compute as trained ones, so speed figures hold for the real model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jrsearch.benchmarks.fresh_process import byte_compile_jrsearch
from jrsearch.benchmarks.output import print_and_save


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
    """Images/s of `encode_images` alone, on inputs decoded and preprocessed beforehand (the ceiling)."""
    from jrsearch.retrieval.imageio import open_image

    inputs = [encoder.preprocess(open_image(p, draft_size=encoder.image_size)) for p in paths]
    batches = [np.stack(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
    encoder.encode_images(batches[0][:2])  # warm-up
    started = time.perf_counter()
    for batch in batches:
        encoder.encode_images(batch)
    return len(paths) / (time.perf_counter() - started)


def jrsearch(*args: str) -> tuple[float, dict]:
    """Wall seconds and parsed JSON output of one `jrsearch` command in a fresh process."""
    command = [str(Path(sys.executable).parent / "jrsearch"), *args, "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-600:]}")
    return wall, json.loads(done.stdout)


def one_round(photos: Path, count: int, model_args: list[str], queries: int) -> dict:
    with tempfile.TemporaryDirectory() as lib_dir:
        library = ["--library", lib_dir]
        wall, report = jrsearch("index", str(photos), *library, *model_args)
        assert report["indexed"] == count, report
        rerun, again = jrsearch("index", str(photos), *library, *model_args)
        assert again["unchanged"] == count and again["indexed"] == 0, again
        cold = [jrsearch("query", "a dog on a beach", *library)[0] for _ in range(queries)]
    return {"index_wall_s": wall, "images_per_s": count / wall, "rerun_s": rerun,
            "cold_query_s": statistics.median(cold)}


def main() -> None:
    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.types import ModelSpec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="JPEGs to generate (without --photos)")
    parser.add_argument("--photos", type=Path, help="index this folder of JPEGs instead")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none", help="'none' = random weights (same speed)")
    parser.add_argument("--checkpoint", type=Path, help="a local open_clip checkpoint for --model")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoder call in the ceilings")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=5, help="cold queries per round (median)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    byte_compile_jrsearch()
    from jrsearch.retrieval.encoders.openclip import register_model_configs

    register_model_configs(Path(__file__).resolve().parent / "model_configs")  # benchmark-only model configs
    pretrained = (str(args.checkpoint.resolve()) if args.checkpoint
                  else "" if args.pretrained == "none" else args.pretrained)
    spec = ModelSpec(args.model, pretrained)
    model_args = ["--model", args.model, "--precision", args.precision, "--backend", args.backend]
    model_args += ["--checkpoint", pretrained] if args.checkpoint else ["--pretrained", args.pretrained]
    with tempfile.TemporaryDirectory() as tmp:
        photos = args.photos or Path(tmp) / "photos"
        paths = sorted(photos.glob("*.jpg")) if args.photos else make_photos(photos, args.images)
        encoder = load_encoder(spec, device="cpu", precision=args.precision, backend=args.backend)  # exports once
        onnxruntime = load_encoder(spec, device="cpu", precision="fp32", backend="onnx")
        rounds = []
        for _ in range(args.repeats):  # back to back, so machine noise hits both alike
            load = os.getloadavg()[0]
            ceiling = model_only(onnxruntime, paths, args.batch_size)
            own = model_only(encoder, paths, args.batch_size) if encoder.backend != "onnx" else ceiling
            measured = one_round(photos, len(paths), model_args, args.queries)
            rounds.append({"ceiling_images_per_s": ceiling, f"{encoder.backend}_images_per_s": own, **measured,
                           "ratio": measured["images_per_s"] / ceiling,
                           f"ratio_to_{encoder.backend}": measured["images_per_s"] / own, "loadavg_1min": load})
            print(" | ".join(f"{k} {v:.3f}" for k, v in rounds[-1].items()), flush=True)

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 3)

    result = {
        "benchmark": "index_speed", "model": spec.label(), "precision": args.precision,
        "backend": encoder.backend, "ceiling": "ONNX Runtime fp32 forward-only", "notes": encoder.notes,
        "images": len(paths),
        "ceiling_batch_size": args.batch_size, "repeats": args.repeats,
        **{f"median_{k}": median(k) for k in rounds[0]},
        "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print_and_save(result, args.out, f"index_speed_{args.model}_{args.precision}_{encoder.backend}")


if __name__ == "__main__":
    main()
