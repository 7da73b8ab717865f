"""What each open_clip model costs on the fast CPU path here, measured from fresh processes.

    nice -n 19 python -m jrsearch.benchmarks.models --models MobileCLIP2-S0 ViT-B-32 [--images 32]

Random weights (`--pretrained none`): the compute, the export and the memory are a trained
model's. Each model gets a fresh model cache (removed afterwards) and three child processes:

  export  loads the model in torch, exports it (ONNX towers checked against torch, the numpy text
          tower, the runtime tuning), as the first `jrsearch index` with it does: wall and CPU
          seconds, peak RSS (the child's ru_maxrss), the backend it ended on and its notes
  warm    opens the export (no torch), embeds IMAGES random preprocessed images after one untimed
          batch, and QUERIES text queries on the numpy text tower after one untimed: CPU-seconds
          (all threads) per image and per query, peak RSS, whether torch was imported
  cold    one text query in a fresh process, as `jrsearch query` runs it: CPU-seconds and wall

Results merge into benchmarks/results/models.json (one entry per model, so models can be measured
one run at a time); `jrsearch models` shows them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jrsearch.benchmarks.output import print_and_save

RESULTS = Path(__file__).parent / "results"
NAME = "models"
QUERIES = ["a dog on a beach", "two people riding bicycles past a red building at night", "a bowl of fruit",
           "snow on the mountains at sunrise", "a cat asleep on a sofa"]


def _child(role: str, model: str, images: int) -> dict:
    """Run one role in the current process (a fresh child) and return what it measured."""
    import numpy as np

    from jrsearch.retrieval.types import ModelSpec

    spec = ModelSpec(model, "")
    if role == "cold":
        from jrsearch.retrieval.hf_text_tower import load_query_tower
        from jrsearch.retrieval.model_cache import find

        folder = find(spec)
        meta = json.loads((folder / "query_model" / "meta.json").read_text()) if folder else {}
        tower = load_query_tower(Path("/nonexistent"), spec, int(meta.get("dim", 0)))
        if tower is None:
            return {"text_tower": None}
        tower.encode_texts(QUERIES[:1])
        return {"text_tower": type(tower).__name__, "torch": "torch" in sys.modules}

    from jrsearch.retrieval.encoders import load_encoder

    encoder = load_encoder(spec)
    out: dict = {"backend": encoder.backend, "batch": getattr(encoder, "batch_size", None),
                 "notes": list(encoder.notes), "dim": encoder.dim}
    if role == "export":
        return out
    side = encoder.image_size
    batch = np.random.default_rng(0).standard_normal((images, 3, side, side), dtype=np.float32)
    encoder.encode_images(batch[:min(images, 8)])
    started = time.process_time()
    encoder.encode_images(batch)
    out["cpu_s_per_image"] = (time.process_time() - started) / images
    from jrsearch.retrieval.hf_text_tower import load_query_tower

    tower = load_query_tower(Path("/nonexistent"), spec, encoder.dim)
    if tower is not None:
        tower.encode_texts(QUERIES[:1])
        started = time.process_time()
        for query in QUERIES:
            tower.encode_texts([query])
        out["cpu_s_per_query"] = (time.process_time() - started) / len(QUERIES)
    out["torch"] = "torch" in sys.modules
    return out


def _spawn(role: str, model: str, images: int, cache: Path) -> dict:
    """One child: its JSON answer plus its wall time, CPU seconds and peak RSS (its own, from wait4)."""
    # BLAS on one thread, as `jrsearch query` runs the numpy text tower (spinning threads inflate CPU-seconds)
    env = {**os.environ, "JRSEARCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "jrsearch.benchmarks.models", "--child", role,
                                  "--models", model, "--images", str(images)], stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        lines = stdout.read().decode().strip().splitlines()
        errors = stderr.read().decode().strip().splitlines()
    measured = {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}  # KiB on Linux
    if child.returncode != 0 or not lines:
        return {"error": (errors or ["?"])[-1][:300], **measured}
    return {**json.loads(lines[-1]), **measured}


def measure(model: str, images: int) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="jrsearch-models-bench-"))
    try:
        result: dict = {"model": model, "pretrained": "none (random weights)"}
        for role in ("export", "warm", "cold"):
            result[role] = _spawn(role, model, images, cache)
            if "error" in result[role]:
                break
        result["cache_mib"] = round(sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20, 1)
        return result
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--images", type=int, default=32, help="images per warm measurement")
    parser.add_argument("--child", choices=("export", "warm", "cold"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.models[0], args.images)))
        return
    from jrsearch.benchmarks.fresh_process import byte_compile_jrsearch
    from jrsearch.retrieval.encoders.tuning import machine_key

    byte_compile_jrsearch()
    path = args.out / f"{NAME}.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    models = saved.get("models", {})
    for model in args.models:
        models[model] = measure(model, args.images)
        print(json.dumps(models[model]), flush=True)
    print_and_save({"machine": machine_key("fp32", ["auto"]), "images": args.images, "queries": len(QUERIES),
                    "models": models}, args.out, NAME)


if __name__ == "__main__":
    main()
