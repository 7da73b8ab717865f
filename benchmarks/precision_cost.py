"""What `--precision int8` or `bf16` costs against fp32 on the CPU backend, and what it buys.

    python -m jrsearch.benchmarks.precision_cost --precision int8 --model ViT-B-32 --pretrained none --images 300
    python -m jrsearch.benchmarks.precision_cost --precision bf16 --model ViT-B-32-256 --checkpoint ck.pt --photos DIR

On a generated corpus (photo-like JPEGs and short captions from a word grid), both precisions
embed everything; reported are the mean and minimum cosine between a file's fp32 and other
vectors (images and texts), the mean top-10 overlap of image->image search (every image as a
query, itself excluded) and of text->image search (every caption as a query), each list
against the fp32 one, and the forward-only images/s of both, measured back to back.
Random weights cost the same compute as trained ones, but their neighbourhoods are flatter, so
the overlap is a pessimistic figure for a trained model. Prints and saves JSON.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from jrsearch.benchmarks.index_speed import make_photos, model_only
from jrsearch.benchmarks.output import print_and_save

SUBJECTS = ["a dog", "a red car", "two children", "an old man", "a cat", "a bicycle", "a sailing boat", "a horse"]
PLACES = ["on a beach", "in a kitchen", "at night", "in the snow", "next to a building", "in a green field"]
BACKENDS = {"fp32": "onnx", "int8": "onnx", "bf16": "openvino"}  # fp32 on ONNX Runtime is the reference
RUNTIMES = {"int8": "ONNX Runtime dynamic quantisation, int8 weights per channel, MatMul only",
            "bf16": "OpenVINO on the fp32 export, bf16 inference precision"}
STYLES = ["", " in black and white", " seen from above", " with bright colours"]


def captions() -> list[str]:
    return [f"{s} {p}{t}" for s, p, t in itertools.product(SUBJECTS, PLACES, STYLES)]


def top_k(queries: np.ndarray, base: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    scores = queries @ base.T
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist(), strict=True)]))


def main() -> None:
    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.imageio import open_image
    from jrsearch.retrieval.types import ModelSpec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=("int8", "bf16"), default="int8", help="compared with fp32")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--photos", type=Path, help="a folder of JPEGs instead of generated ones")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="speed rounds (both precisions back to back)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()

    pretrained = (str(args.checkpoint.resolve()) if args.checkpoint
                  else "" if args.pretrained == "none" else args.pretrained)
    spec = ModelSpec(args.model, pretrained)
    other = args.precision
    encoders = {p: load_encoder(spec, device="cpu", precision=p, backend=BACKENDS[p]) for p in ("fp32", other)}
    with tempfile.TemporaryDirectory() as tmp:
        paths = sorted(args.photos.glob("*.jpg")) if args.photos else make_photos(Path(tmp) / "photos", args.images)
        inputs = np.stack([encoders["fp32"].preprocess(open_image(p, draft_size=encoders["fp32"].image_size))
                           for p in paths])
        images = {p: e.encode_images(inputs) for p, e in encoders.items()}
        texts = {p: e.encode_texts(captions()) for p, e in encoders.items()}
        speed: dict[str, list[float]] = {p: [] for p in encoders}
        for _ in range(args.repeats):
            for p, e in encoders.items():
                speed[p].append(model_only(e, paths[:128], 32))

    image_cos = np.sum(images["fp32"] * images[other], axis=1)
    text_cos = np.sum(texts["fp32"] * texts[other], axis=1)
    i2i = {p: top_k(images[p], images[p], args.k, exclude_self=True) for p in encoders}
    t2i = {p: top_k(texts[p], images[p], args.k, exclude_self=False) for p in encoders}
    result = {
        "benchmark": "precision_cost", "model": spec.label(), "precision": other, "images": len(paths),
        "captions": len(captions()), "k": args.k, "runtime": RUNTIMES[other],
        "image_cosine_mean": round(float(image_cos.mean()), 5), "image_cosine_min": round(float(image_cos.min()), 5),
        "text_cosine_mean": round(float(text_cos.mean()), 5), "text_cosine_min": round(float(text_cos.min()), 5),
        "image_to_image_top_k_overlap": round(overlap(i2i["fp32"], i2i[other]), 4),
        "text_to_image_top_k_overlap": round(overlap(t2i["fp32"], t2i[other]), 4),
        "fp32_images_per_s": [round(s, 2) for s in speed["fp32"]],
        f"{other}_images_per_s": [round(s, 2) for s in speed[other]],
        "speedup_median": round(statistics.median(
            i / f for i, f in zip(speed[other], speed["fp32"], strict=True)), 3),
        "loadavg_1min": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print_and_save(result, args.out, f"precision_cost_{args.model}_{other}")


if __name__ == "__main__":
    main()
