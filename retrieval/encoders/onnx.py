"""open_clip's image and text towers through ONNX Runtime on the CPU, without torch.

`export_model` runs once per model and weights (it needs the torch model): it writes both
towers as ONNX into the model's cache folder (`model_cache`), checks them against torch on a
probe batch (cosine >= `PROBE_COSINE` per vector, else `ExportError` and the caller keeps
torch), and ORT applies its graph optimisations when a session opens. `OnnxClipEncoder` loads
that folder with onnxruntime and numpy only: `import torch` never happens on this path.

int8 (`--precision int8`) is a dynamically quantised copy of each tower (weights int8, MatMuls
quantised per batch), made from the fp32 ONNX on first use, also without torch.

Two runtimes read the export: ONNX Runtime (fp32, int8) and OpenVINO (fp32, bf16;
`openvino_runtime`), which `backend` prefers where it measured faster. OpenVINO is held to ONNX
Runtime's fp32 vectors once per export and precision, on the probe batch (`check_openvino`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from jrsearch.retrieval import model_cache
from jrsearch.retrieval.checksums import check_file, write_checked, write_folder_checked
from jrsearch.retrieval.encoders.joint import JointTowers
from jrsearch.retrieval.encoders.preprocess import ImagePreprocess, stack
from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.fileio import keep_json_entry, read_json_object, write_json_atomic
from jrsearch.retrieval.settings import THREADS
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    import onnxruntime
    import torch

    from jrsearch.retrieval.encoders.openclip import OpenClipEncoder

FORMAT = 2  # 2: the last block runs for the pooled token only (`pooled_export`)
PROBE_COSINE = 0.9999
OPSET = 17
TOWERS = ("image", "text")
RUNTIME_PRECISIONS = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "bf16")}
QUANTIZED = ("int8",)  # precisions with their own copy of the export


PROBE_TEXTS = ("a dog on a beach", "two people riding bicycles past a red building at night", "", "x " * 90)
OPENVINO_CHECK = "openvino_check.json"


class ExportError(JrsearchError):
    """The model could not be exported or did not match torch; the caller falls back to torch."""


def probe_image_batch(size: Sequence[int]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 3, *size), dtype=np.float32)


def tower_file(tower: str, precision: str) -> str:
    return f"{tower}.{precision}.onnx" if precision in QUANTIZED else f"{tower}.onnx"


def cpu_threads() -> int:
    """ORT intra-op threads: `JRSEARCH_THREADS`, else the CPUs this process may use."""
    explicit = THREADS.text()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def session(path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class TowerRunner(Protocol):
    def run(self, inputs: np.ndarray, batch_size: int) -> np.ndarray:
        """The tower's outputs for all `inputs`, run `batch_size` at a time."""
        ...


class OrtRunner:
    """One tower on ONNX Runtime: one batch after another, each on all its intra-op threads. A graph
    with a fixed batch (immich's exports: 1) gets batches of that size; inputs take its dtype."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self._session = session(path, threads)
        graph_input = self._session.get_inputs()[0]
        self._input = graph_input.name
        self._dtype = np.int32 if graph_input.type == "tensor(int32)" else None
        self._fixed_batch = graph_input.shape[0] if isinstance(graph_input.shape[0], int) else None

    def run(self, inputs: np.ndarray, batch_size: int) -> np.ndarray:
        batch_size = self._fixed_batch or batch_size
        inputs = inputs.astype(self._dtype) if self._dtype else inputs
        return np.concatenate([self._session.run(None, {self._input: inputs[i:i + batch_size]})[0]
                               for i in range(0, len(inputs), batch_size)])


def runner(path: Path, runtime: str, precision: str) -> TowerRunner:
    """One tower file on `runtime` ("onnx" or "openvino") at `precision`."""
    if runtime == "openvino":
        from jrsearch.retrieval.encoders.openvino_runtime import OpenVinoRunner

        return OpenVinoRunner(path, precision, cpu_threads())
    return OrtRunner(path)


class OnnxClipEncoder(JointTowers):
    """An exported open_clip model on ONNX Runtime or OpenVINO (`backend`): numpy in,
    L2-normalised float32 numpy out."""

    device = "cpu"
    preprocess: ImagePreprocess

    def __init__(self, spec: ModelSpec, folder: Path, meta: dict, precision: str = "fp32",
                 runtime: str = "onnx", batch_size: int = 32) -> None:
        from jrsearch.retrieval.query_model import query_tokenizer

        self.spec = spec
        self.folder = folder
        self.meta = meta
        self.precision = precision
        self.backend = runtime
        self.batch_size = batch_size
        self.dim = int(meta["dim"])
        self.preprocess = ImagePreprocess.from_cfg(meta["preprocess"])
        self.image_size = self.preprocess.side
        self.tokenizer = query_tokenizer(folder, meta)
        self.notes: list[str] = []
        self._runners: dict[str, TowerRunner] = {}
        self._opening = threading.Lock()  # one session per tower, whichever thread asks first

    @classmethod
    def open(cls, spec: ModelSpec, folder: Path, precision: str = "fp32",
             runtime: str = "onnx") -> OnnxClipEncoder | None:
        """The export in `folder`, or None where it is missing, of another format or partial.
        Raises `RuntimeUnavailable` where `runtime` cannot run `precision` here."""
        meta = model_cache.read_meta(folder)
        if meta is None or meta.get("format") != FORMAT or meta.get("model") != spec.name:
            return None
        if not all((folder / tower_file(t, "fp32")).is_file() for t in TOWERS):
            return None
        if precision not in RUNTIME_PRECISIONS[runtime]:
            from jrsearch.retrieval.encoders.openvino_runtime import RuntimeUnavailable

            raise RuntimeUnavailable(f"{runtime} does not run {precision}")
        if precision in QUANTIZED:
            ensure_quantized(folder, precision)
        if runtime == "openvino":
            check_openvino(folder, meta, precision)
        return cls(spec, folder, meta, precision, runtime)

    def _runner(self, tower: str) -> TowerRunner:
        with self._opening:
            if tower not in self._runners:
                self._runners[tower] = runner(self.folder / tower_file(tower, self.precision), self.backend,
                                              self.precision)
            return self._runners[tower]

    def encode_images(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Preprocessed images ((3, h, w) each, or stacked) -> (n, dim)."""
        return self._run("image", stack(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._run("text", self.tokenizer(list(texts)))

    def _run(self, tower: str, inputs: np.ndarray) -> np.ndarray:
        if not len(inputs):
            return np.zeros((0, self.dim), np.float32)
        return _normalise(self._runner(tower).run(inputs, self.batch_size))


def check_openvino(folder: Path, meta: dict, precision: str) -> None:
    """Raise `RuntimeUnavailable` unless OpenVINO runs `precision` here and its vectors match ONNX
    Runtime's fp32 ones on the probe batch (cosine >= PROBE_COSINE per vector). Measured once per
    export and precision, and kept in `OPENVINO_CHECK`."""
    from jrsearch.retrieval.encoders.openvino_runtime import OpenVinoRunner, RuntimeUnavailable, require

    require(precision)
    record = folder / OPENVINO_CHECK
    kept = read_json_object(record).get(precision)
    cosines: dict[str, float] = kept if isinstance(kept, dict) and set(kept) == set(TOWERS) else {}
    if not cosines:
        inputs = probe_inputs(folder, meta)
        for tower in TOWERS:
            path = folder / tower_file(tower, "fp32")
            batch = len(inputs[tower])
            expected = _normalise(OrtRunner(path).run(inputs[tower], batch))
            got = _normalise(OpenVinoRunner(path, precision, cpu_threads()).run(inputs[tower], batch))
            cosines[tower] = float((expected * got).sum(1).min())
        keep_json_entry(record, precision, cosines)
    worst = min(cosines, key=lambda tower: cosines[tower])
    if cosines[worst] < PROBE_COSINE:
        raise RuntimeUnavailable(f"the {worst} tower on OpenVINO in {precision} differs from ONNX Runtime fp32 "
                                 f"(cosine {cosines[worst]:.6f} < {PROBE_COSINE})")


def probe_inputs(folder: Path, meta: dict) -> dict[str, np.ndarray]:
    """The probe batch of each tower, as the export check used it."""
    from jrsearch.retrieval.query_model import query_tokenizer

    return {"image": probe_image_batch(ImagePreprocess.from_cfg(meta["preprocess"]).size),
            "text": query_tokenizer(folder, meta)(list(PROBE_TEXTS))}


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ensure_quantized(folder: Path, precision: str) -> None:
    """Write the int8 copies of both towers beside the fp32 ones, once (no torch needed).

    Dynamic quantisation, not static: a static QDQ copy of the ViT-B-32-256 image tower (calibrated
    on 64 photos) ran 1.0-1.16x as fast as this one, moved vectors twice as far from fp32 (cosine
    0.99975 against 0.99986) with a lower top-10 overlap (0.985 against 0.988), and clips inputs
    unlike its calibration images; dynamic measures each batch's range
    (`python -m jrsearch.benchmarks.int8_static`, README "Speed")."""
    if precision not in QUANTIZED:
        raise ExportError(f"precision {precision} has no quantised ONNX copy; use int8")
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its advice goes to the root logger
    for tower in TOWERS:
        target = folder / tower_file(tower, precision)
        if target.is_file() and not check_file(target).damaged:
            continue
        source = folder / tower_file(tower, "fp32")

        def quantise(tmp: Path, source: Path = source) -> None:
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"MatMulConstBOnly": True})

        try:
            write_checked(target, quantise, suffix=".onnx")
        except Exception as exc:
            raise ExportError(f"could not quantise {source} to {precision} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None


# -- export (needs torch and the open_clip model) -----------------------------------------------


def supported(encoder: OpenClipEncoder) -> str | None:
    """Why this model cannot go through ONNX, or None where it can."""
    import open_clip

    from jrsearch.retrieval.encoders.preprocess import ImagePreprocess
    from jrsearch.retrieval.query_model import tokenizer_config

    # CoCa: its contrastive towers (encode_image / encode_text); the caption decoder is not exported
    if not isinstance(encoder.model, (open_clip.CLIP, open_clip.CustomTextCLIP, open_clip.CoCa)):
        return f"{type(encoder.model).__name__} models are not exported"
    if tokenizer_config(encoder.tokenizer) is None:
        return "its tokenizer is neither CLIP's BPE tokenizer nor a plain Hugging Face one"
    try:
        ImagePreprocess.from_cfg(encoder.preprocess_cfg)
    except (KeyError, ValueError, TypeError) as exc:
        return f"its image transform is not supported ({exc})"
    return None


def export_model(encoder: OpenClipEncoder, folder: Path) -> Path:
    """Export `encoder` (fp32 torch on CPU) into `folder`; raises `ExportError` saying why not."""
    why = supported(encoder)
    if why:
        raise ExportError(f"{encoder.spec.label()} cannot run on ONNX Runtime: {why}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    write_folder_checked(folder, lambda tmp: write_json_atomic(tmp / "meta.json", _export_into(encoder, tmp)))
    return folder


def _export_into(encoder: OpenClipEncoder, tmp: Path) -> dict:
    import torch

    from jrsearch.retrieval.encoders.pooled_export import image_tower, text_tower
    from jrsearch.retrieval.query_model import query_tokenizer, save_tokenizer, tokenizer_config

    model = encoder.model
    preprocess = encoder.preprocess
    assert isinstance(preprocess, ImagePreprocess)  # `supported` refused the others
    size = preprocess.size
    context = int(model.context_length)

    class Tower(torch.nn.Module):
        def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
            super().__init__()
            self.model = model  # its weights become the graph's initialisers
            self.tower = forward

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return self.tower(input)

    probe_images = torch.from_numpy(probe_image_batch(size))
    tokens_config = tokenizer_config(encoder.tokenizer)
    assert tokens_config is not None  # `supported` refused the others
    tokens_meta = {**tokens_config, "context_length": context}
    save_tokenizer(encoder.tokenizer, tokens_config, context, tmp)
    tokens = query_tokenizer(tmp, tokens_meta)(list(PROBE_TEXTS))
    if not np.array_equal(tokens, encoder.tokenizer(list(PROBE_TEXTS)).numpy()):
        raise ExportError(f"{encoder.spec.label()}: jrsearch's tokenizer disagrees with the model's")
    # Gradients on during export: nn.MultiheadAttention's fused inference path does not export.
    with torch.enable_grad(), _quiet():
        for name, module, example in (("image", Tower(image_tower(model)), probe_images[:2]),
                                      ("text", Tower(text_tower(model)), torch.from_numpy(tokens[:2]))):
            torch.onnx.export(module.eval(), (example,), str(tmp / tower_file(name, "fp32")),
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "n"}, "output": {0: "n"}}, opset_version=OPSET,
                              dynamo=False)
    with torch.inference_mode():
        expected = {"image": model.encode_image(probe_images, normalize=True).numpy(),
                    "text": model.encode_text(torch.from_numpy(tokens), normalize=True).numpy()}
    inputs = {"image": probe_images.numpy(), "text": tokens}
    cosines = {}
    for name in TOWERS:
        got = _normalise(session(tmp / tower_file(name, "fp32")).run(None, {"input": inputs[name]})[0])
        cosines[name] = float((got * _normalise(expected[name])).sum(1).min())
        if cosines[name] < PROBE_COSINE:
            raise ExportError(f"{encoder.spec.label()}: the ONNX {name} tower differs from torch "
                              f"(cosine {cosines[name]:.6f} < {PROBE_COSINE})")
    return {"format": FORMAT, "model": encoder.spec.name, "pretrained": encoder.spec.pretrained,
            "dim": encoder.dim, **tokens_meta, "preprocess": preprocess.to_cfg(),
            "probe_cosine": cosines, "torch": torch.__version__}


class _quiet:
    """Silence the exporter's warnings (they go to stderr and say nothing a user can act on)."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._catch.__exit__(exc_type, exc, traceback)
