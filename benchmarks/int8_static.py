"""Static against dynamic int8 for the image tower through ONNX Runtime: why `--precision int8`
is dynamic.

    python -m jrsearch.benchmarks.int8_static --model ViT-B-32-256 --checkpoint ck.pt --photos /tmp/corpus/images

The fp32 export and the dynamic int8 copy are the ones `--precision int8` uses (model cache).
The static copy is made here with `onnxruntime.quantization.quantize_static`: QDQ format, int8
weights per channel, uint8 activations, MatMul/Gemm/Conv, calibrated (MinMax or Percentile) on
the first `--calibration` images; the rest are evaluated. Reported: forward-only images/s of the
three, back to back per round, in CPU seconds on one thread (steady while other jobs share the
cores) and in wall seconds; each int8 copy's cosine to fp32 and its image->image top-10 overlap
with fp32 search. Prints and saves JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from jrsearch.benchmarks.index_speed import make_photos
from jrsearch.benchmarks.output import print_and_save
from jrsearch.benchmarks.precision_cost import overlap, top_k


def quantize_static(source: Path, target: Path, calibration: np.ndarray, method: str) -> float:
    """Write the static QDQ copy of `source`; returns the seconds it took."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as quantize

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    started = time.perf_counter()
    quantize(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
             activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
             op_types_to_quantize=["MatMul", "Gemm", "Conv"],
             calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method])
    return time.perf_counter() - started


def speed(run, inputs: np.ndarray, clock) -> float:
    started = clock()
    for i in range(0, len(inputs), 32):
        run(inputs[i:i + 32])
    return len(inputs) / (clock() - started)


def main() -> None:
    import onnxruntime as ort

    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.imageio import open_image
    from jrsearch.retrieval.types import ModelSpec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, help="a folder of JPEGs (default: generated ones)")
    parser.add_argument("--images", type=int, default=320, help="photos used (generated without --photos)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--method", choices=["minmax", "percentile"], default="minmax")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()

    pretrained = (str(args.checkpoint.resolve()) if args.checkpoint
                  else "" if args.pretrained == "none" else args.pretrained)
    spec = ModelSpec(args.model, pretrained)
    encoder = load_encoder(spec, device="cpu", precision="int8", backend="onnx")  # exports and quantises once
    folder = getattr(encoder, "folder", None)
    if folder is None:
        raise SystemExit(f"{spec.label()} has no ONNX export ({'; '.join(encoder.notes)})")
    with tempfile.TemporaryDirectory() as tmp:
        paths = (sorted(args.photos.glob("*.jpg"))[:args.images] if args.photos
                 else make_photos(Path(tmp) / "photos", args.images))
        inputs = np.stack([encoder.preprocess(open_image(p, draft_size=encoder.image_size)) for p in paths])
        calibration, evaluated = inputs[:args.calibration], inputs[args.calibration:]
        static = Path(tmp) / "image.static.onnx"
        quantise_s = quantize_static(folder / "image.onnx", static, calibration, args.method)
        files = {"fp32": folder / "image.onnx", "dynamic": folder / "image.int8.onnx", "static": static}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        sessions = {k: ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"])
                    for k, f in files.items()}
        runs = {k: (lambda x, s=s: s.run(None, {"input": x})[0]) for k, s in sessions.items()}
        vectors = {k: np.concatenate([run(evaluated[i:i + 32]) for i in range(0, len(evaluated), 32)])
                   for k, run in runs.items()}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        wall: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):
            for k, run in runs.items():
                cpu[k].append(speed(run, evaluated[:64], time.process_time))
                wall[k].append(speed(run, evaluated[:64], time.perf_counter))

    unit = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in vectors.items()}
    reference = top_k(unit["fp32"], unit["fp32"], 10, exclude_self=True)
    cosine = {k: (unit[k] * unit["fp32"]).sum(1) for k in ("dynamic", "static")}
    result = {
        "benchmark": "int8_static", "model": spec.label(), "images_evaluated": len(evaluated),
        "calibration_images": len(calibration), "method": args.method, "static_quantise_s": round(quantise_s, 1),
        "cpu_images_per_s_1_thread": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
        "wall_images_per_s_1_thread": {k: [round(x, 2) for x in v] for k, v in wall.items()},
        "static_over_dynamic_cpu_median": round(statistics.median(s / d for s, d in zip(cpu["static"], cpu["dynamic"],
                                                                                         strict=True)), 3),
        "dynamic_over_fp32_cpu_median": round(statistics.median(d / f for d, f in zip(cpu["dynamic"], cpu["fp32"],
                                                                                       strict=True)), 3),
        **{f"{k}_cosine_to_fp32_mean_min": [round(float(cosine[k].mean()), 5), round(float(cosine[k].min()), 5)]
           for k in cosine},
        **{f"{k}_image_to_image_top10_overlap": round(overlap(reference, top_k(unit[k], unit[k], 10, True)), 4)
           for k in cosine},
        "loadavg_1min": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print_and_save(result, args.out, f"int8_static_{args.model}")


if __name__ == "__main__":
    main()
