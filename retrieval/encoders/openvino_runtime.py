"""The ONNX export on OpenVINO: for bf16 embedding, and for fp32 where `tuning` measures it faster.

Measured on the 2-core test VMs with the ViT-B-32-256 image tower, back to back (README "Speed"):
  * fp32: OpenVINO's throughput mode (two streams of one thread, each taking the next part of a
    batch when it is done) ran 1.15x as fast as ONNX Runtime on an Intel Xeon with AMX, 1.05-1.12x
    on AMD EPYCs with AVX-512, and no faster on an AMD EPYC with AVX2 only, at cosine 0.9999999;
  * bf16 (`--precision bf16`): about 4x fp32 with AMX tiles, 2x with AVX-512 bf16 instructions,
    at cosine >= 0.9999 to fp32.
`onnx.check_openvino` holds each model to ONNX Runtime's fp32 vectors once, on a probe batch,
before it is used. int8 stays on ONNX Runtime (its dynamic quantisation).
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.extras import install_hint

if TYPE_CHECKING:
    import openvino as ov

CACHE_DIR = "openvino"  # compiled blobs beside the export: a second compile takes 0.2 s instead of 1.1 s
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class RuntimeUnavailable(JrsearchError):
    """OpenVINO, this CPU or this model cannot run the export at a precision; the caller keeps ONNX Runtime."""


def require(precision: str) -> None:
    """Raise `RuntimeUnavailable` saying why, where OpenVINO cannot run `precision` here."""
    if precision not in PRECISIONS:
        raise RuntimeUnavailable(f"OpenVINO runs fp32 or bf16, not {precision}")
    if precision == "bf16" and "BF16" not in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise RuntimeUnavailable("this CPU has no bf16 instructions")
    _core()


@cache
def _core() -> ov.Core:
    try:
        import openvino as ov
    except ImportError as exc:
        raise RuntimeUnavailable(f"OpenVINO is not installed ({exc}); {install_hint('openvino')}") from None
    return ov.Core()


class OpenVinoRunner:
    """One tower of the export compiled by OpenVINO.

    Throughput mode: OpenVINO picks the number of streams for the cores it may use, with one infer
    request each. A batch is split across the requests, and every request takes the next part as
    soon as it is done, so a stream slowed by other work on its core (decoding, say) holds up the
    others only at the end of a call, not at every batch."""

    def __init__(self, path: Path, precision: str, threads: int) -> None:
        require(precision)  # before the import: a missing OpenVINO is a RuntimeUnavailable, not an ImportError
        import openvino as ov

        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision],
                                     "PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": threads}
        cache_dir = path.parent / CACHE_DIR
        try:
            cache_dir.mkdir(exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir)
        except OSError:
            pass  # a read-only cache folder only costs a slower compile
        compiled = _core().compile_model(str(path), "CPU", config)
        graph_input = compiled.input(0)  # a fixed batch (immich's exports: 1) and int32 tokens are kept
        batch = graph_input.get_partial_shape()[0]
        self._fixed_batch = batch.get_length() if batch.is_static else None
        self._dtype = np.int32 if graph_input.get_element_type() == ov.Type.i32 else None
        self.streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._queue = ov.AsyncInferQueue(compiled, self.streams)
        self._queue.set_callback(self._keep)
        self._outputs: list[np.ndarray] = []
        self._busy = threading.Lock()  # the queue serves one caller at a time

    def run(self, inputs: np.ndarray, batch_size: int) -> np.ndarray:
        # each request's share of a batch; a call shorter than a batch is still split across all streams
        part = self._fixed_batch or max(1, -(-min(batch_size, len(inputs)) // self.streams))
        inputs = inputs.astype(self._dtype) if self._dtype else inputs
        starts = range(0, len(inputs), part)
        with self._busy:
            self._outputs = [np.empty(0, np.float32)] * len(starts)
            for job, start in enumerate(starts):
                self._queue.start_async({0: inputs[start:start + part]}, job)
            self._queue.wait_all()
            return np.concatenate(self._outputs)

    def _keep(self, request: ov.InferRequest, job: int) -> None:
        self._outputs[job] = np.array(request.get_output_tensor(0).data, dtype=np.float32)
