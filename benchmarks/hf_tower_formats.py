"""Which format runs a multilingual (HF) text tower fastest in a fresh process: numpy or ONNX Runtime?

Needs `pip install onnx onnxruntime` besides `.[dev]` (only this comparison uses them).

    python -m jrsearch.benchmarks.hf_tower_formats --library L --model xlm-roberta-base-ViT-B-32-shape --runs 11

L is a library indexed with that model (e.g. the one `python -m jrsearch.benchmarks.cold_query --work DIR
--models xlm-roberta-base-ViT-B-32-shape` builds; its export is in L/query_model). The same
text tower is exported once to ONNX (torch.onnx, opset 17), then fresh processes are timed back to
back, from process start to the query's vector: the numpy tower (`retrieval/hf_text_tower.py`, as
`jrsearch query` runs it) against an onnxruntime session over the ONNX file, both tokenizing with
the `tokenizers` package, each on one thread (as `jrsearch query` runs). Prints and saves JSON
(medians, every run, the cosine between the two).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
QUERIES = ["ein Hund am Strand", "海滩上的狗", "собака на пляже", "해변의 개", "a dog on a beach"]

NUMPY_RUN = """
import sys, time, numpy as np
from pathlib import Path
from jrsearch.retrieval.hf_text_tower import HfTextTower
from jrsearch.retrieval.types import ModelSpec
tower = HfTextTower.load(Path(sys.argv[1]), ModelSpec(sys.argv[2], ""), int(sys.argv[3]))
np.save(sys.argv[5], tower.encode_texts([sys.argv[4]])[0])
"""

ONNX_RUN = """
import sys, numpy as np
from pathlib import Path
import onnxruntime
from jrsearch.retrieval.hf_tokenizer import HfTokenizer
import json
meta = json.loads((Path(sys.argv[1]) / "query_model" / "meta.json").read_text())
ids = HfTokenizer(Path(sys.argv[1]) / "query_model" / "tokenizer.json", meta["context_length"])([sys.argv[4]])[0]
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1  # one query row, as the numpy tower: threads only contend
session = onnxruntime.InferenceSession(sys.argv[6], options, providers=["CPUExecutionProvider"])
np.save(sys.argv[5], session.run(None, {"input_ids": np.array([ids], dtype=np.int64)})[0][0])
"""


def export_onnx(model_name: str, path: Path) -> None:
    """The model's text tower, `encode_text(normalize=True)`, as ONNX with a dynamic token count."""
    import torch

    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.encoders.openclip import register_model_configs
    from jrsearch.retrieval.types import ModelSpec

    register_model_configs(MODEL_CONFIGS)
    encoder: Any = load_encoder(ModelSpec(model_name, ""), device="cpu")
    model = encoder.model.requires_grad_(False)

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, input_ids):
            return self.clip.encode_text(input_ids, normalize=True)

    ids = torch.tensor([[0, 100, 200, 300, 2]])
    with torch.no_grad():
        torch.onnx.export(TextTower().eval(), (ids,), str(path), input_names=["input_ids"], output_names=["vector"],
                          dynamic_axes={"input_ids": {1: "tokens"}}, opset_version=17, dynamo=False)


def time_runs(script: str, args: Callable[[int], list[str]], runs: int) -> list[float]:
    times = []
    for run in range(runs + 1):  # one warm-up: files in the page cache
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", script, *args(run)], cwd=REPO, check=True, capture_output=True,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})  # as `jrsearch query` sets it
        if run:
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=Path, required=True)
    parser.add_argument("--model", default="xlm-roberta-base-ViT-B-32-shape")
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--out", type=Path, default=REPO / "results")
    args = parser.parse_args()
    import numpy as np

    meta = json.loads((args.library / "query_model" / "meta.json").read_text())
    onnx_file = args.library.parent / "text_tower.onnx"
    if not onnx_file.is_file():
        export_onnx(args.model, onnx_file)
    vectors = {name: args.library.parent / f"{name}.npy" for name in ("numpy", "onnx")}

    def argv(name: str):
        return lambda run: [str(args.library), args.model, str(meta["dim"]), QUERIES[run % len(QUERIES)],
                            str(vectors[name]), str(onnx_file)]

    report: dict = {"model": args.model, "load_before": os.getloadavg(), "formats": {}}
    for name, script in (("numpy", NUMPY_RUN), ("onnx", ONNX_RUN)):
        times = time_runs(script, argv(name), args.runs)
        report["formats"][name] = {"median_s": round(statistics.median(times), 3),
                                   "runs_s": [round(t, 3) for t in times]}
        print(f"{name:6} median {statistics.median(times):.3f} s over {args.runs} fresh processes", flush=True)
    cosine = float(np.dot(np.load(vectors["numpy"]), np.load(vectors["onnx"])))
    report.update(cosine_numpy_onnx=round(cosine, 6), load_after=os.getloadavg(),
                  onnx_mb=round(onnx_file.stat().st_size / 2**20, 1))
    print(f"cosine numpy vs onnx (last query): {cosine:.6f}; onnx file {report['onnx_mb']} MiB")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"hf_tower_formats_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
