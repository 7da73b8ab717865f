"""Which runtime embeds with an open_clip model: the ONNX export on a CPU, torch on a GPU.

`load_open_clip` with backend "auto" runs the model's ONNX export whenever it runs on the CPU: in
fp32 on OpenVINO or ONNX Runtime, whichever `tuning` measured faster on this machine; bf16 on
OpenVINO; int8 on ONNX Runtime; and ONNX Runtime fp32 wherever OpenVINO cannot run or does not
match (one line in `encoder.notes`). A model met for
the first time is loaded in torch once and exported into the model cache (`onnx.export_model`);
every later process opens the export without importing torch. Anything the export cannot do
(an unsupported model, no disk space, a read-only cache, a probe that does not match torch)
leaves the run on torch with one line in `encoder.notes`, never an error.

Every torch load on the way also shares the numpy text tower (`query_model`) in the model's
cache folder, which is what a cold `jrsearch query TEXT` reads.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from jrsearch.retrieval import model_cache
from jrsearch.retrieval.errors import ModelUnavailableError
from jrsearch.retrieval.fileio import write_json_atomic
from jrsearch.retrieval.first_use import first_use
from jrsearch.retrieval.settings import CUDA_VISIBLE_DEVICES
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    from jrsearch.retrieval.checksums import FileCheck
    from jrsearch.retrieval.encoders.onnx import OnnxClipEncoder
    from jrsearch.retrieval.encoders.openclip import OpenClipEncoder

BACKENDS = ("auto", "onnx", "openvino", "torch")  # "onnx" is ONNX Runtime; "openvino" runs the same export
ONNX_DIR = "onnx"


def _wants_gpu(device: str | None) -> bool:
    """True where torch should run the model: an explicit non-CPU device, or a visible NVIDIA GPU."""
    if device:
        return not device.startswith("cpu")
    gpus = Path("/proc/driver/nvidia/gpus")
    hidden = CUDA_VISIBLE_DEVICES.get() in ("", "-1")
    if hidden or not (gpus.is_dir() and any(gpus.iterdir())):
        return False  # no driver: no need to import torch to know there is no CUDA
    import torch

    return bool(torch.cuda.is_available())


def load_open_clip(spec: ModelSpec, device: str | None = None, precision: str = "auto", backend: str = "auto"
                   ) -> OnnxClipEncoder | OpenClipEncoder:
    from jrsearch.retrieval.encoders.onnx import RUNTIME_PRECISIONS
    from jrsearch.retrieval.model_check import check_loadable

    check_loadable(spec, device, backend)
    if backend not in BACKENDS:
        raise ModelUnavailableError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
    cpu_precision = "fp32" if precision == "auto" else precision
    if backend in RUNTIME_PRECISIONS:
        if device and not device.startswith("cpu"):
            raise ModelUnavailableError(
                f"--backend {backend} runs on the CPU; drop --device {device} or use --backend torch")
        if cpu_precision not in RUNTIME_PRECISIONS[backend]:
            runs = " or ".join(RUNTIME_PRECISIONS[backend])
            raise ModelUnavailableError(f"--backend {backend} runs {runs}, not {precision}; use --backend auto")
        return _onnx(spec, cpu_precision, backend)
    on_cpu = any(cpu_precision in runs for runs in RUNTIME_PRECISIONS.values())
    if backend == "torch" or not on_cpu or _wants_gpu(device):
        return _torch(spec, device, precision)
    return _onnx(spec, cpu_precision, "auto")


def _torch(spec: ModelSpec, device: str | None, precision: str) -> OpenClipEncoder:
    from jrsearch.retrieval.encoders.openclip import OpenClipEncoder

    encoder = OpenClipEncoder.load(spec, device=device, precision=precision)
    share_text_tower(encoder)
    return encoder


def _torch_precision(precision: str) -> str:
    return "fp32" if precision == "bf16" else precision  # torch's bf16 is slower on a CPU


def _onnx(spec: ModelSpec, precision: str, runtime: str) -> OnnxClipEncoder | OpenClipEncoder:
    from jrsearch.retrieval.checksums import check_folder
    from jrsearch.retrieval.encoders.onnx import ExportError
    from jrsearch.retrieval.encoders.openclip import OpenClipEncoder

    torch_precision = _torch_precision(precision)
    folder = model_cache.find(spec)
    # sizes only (a truncated tower): reading ViT-B-32's 600 MB would add ~2 s to each start (`check` reads them)
    damage = check_folder(folder / ONNX_DIR) if folder is not None else None
    if damage is not None and damage.damaged:
        folder = None  # exported again below
    if folder is not None:
        try:
            found = _open_export(spec, folder / ONNX_DIR, precision, runtime)
        except ExportError as exc:
            return _fallback(OpenClipEncoder.load(spec, "cpu", torch_precision), str(exc))
        if found is not None:
            return found
    with first_use(spec.label()):
        return _export(spec, precision, runtime, damage)


def _export(spec: ModelSpec, precision: str, runtime: str,
            damage: FileCheck | None = None) -> OnnxClipEncoder | OpenClipEncoder:
    """Load `spec` in torch, export it into the model cache and open the export (or torch, with a note);
    `damage` is what was wrong with the export this one replaces."""
    from jrsearch.retrieval.encoders.onnx import ExportError, export_model
    from jrsearch.retrieval.encoders.openclip import OpenClipEncoder

    torch_precision = _torch_precision(precision)
    encoder = OpenClipEncoder.load(spec, device="cpu", precision="fp32")
    released = False
    share_text_tower(encoder)
    try:
        folder = prepare_folder(encoder)
        export_model(encoder, folder / ONNX_DIR)
        # The runtimes load their own copy of the weights: free torch's first (ViT-L-14's export
        # peak, README "Choosing a model"); the rare failure below loads it again.
        encoder.model, released = None, True
        gc.collect()
        opened = _open_export(spec, folder / ONNX_DIR, precision, runtime)
        if opened is None:
            raise ExportError(f"the export in {folder} could not be read back")
        if damage is not None and damage.damaged:
            opened.notes.append(f"{damage.path} was damaged ({damage.reason}); exported the model again")
        return opened
    except ExportError as exc:
        why = str(exc)
    except OSError as exc:
        why = f"could not write the ONNX export to {model_cache.cache_root()} ({exc.strerror or exc})"
    except Exception as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        why = f"{spec.label()} did not export to ONNX ({type(exc).__name__}: {first})"
    if released or torch_precision != "fp32":
        encoder = OpenClipEncoder.load(spec, device="cpu", precision=torch_precision)
    return _fallback(encoder, why)


def _open_export(spec: ModelSpec, folder: Path, precision: str, runtime: str) -> OnnxClipEncoder | None:
    """The export on `runtime`, or on whichever runtime `tuning` measured fastest here ("auto":
    OpenVINO or ONNX Runtime for fp32, OpenVINO for bf16, ONNX Runtime for int8), at its fastest
    batch size. Where "auto" finds that OpenVINO cannot run it here, ONNX Runtime takes it in fp32,
    with a note; an explicit runtime raises."""
    from jrsearch.retrieval.encoders.onnx import OnnxClipEncoder
    from jrsearch.retrieval.encoders.openvino_runtime import RuntimeUnavailable
    from jrsearch.retrieval.encoders.tuning import fastest

    def opener(runtime: str, precision: str = precision) -> Callable[[], OnnxClipEncoder | None]:
        return lambda: OnnxClipEncoder.open(spec, folder, precision, runtime)

    if runtime != "auto":
        try:
            return fastest(folder, precision, {runtime: opener(runtime)})
        except RuntimeUnavailable as exc:
            raise ModelUnavailableError(
                f"--backend {runtime} cannot embed {spec.label()} in {precision}: {exc}") from None
    if precision == "int8":
        return fastest(folder, precision, {"onnx": opener("onnx")})
    from jrsearch.retrieval.extras import installed

    if precision == "fp32" and not installed("openvino"):  # the `openvino` extra is not installed
        return fastest(folder, precision, {"onnx": opener("onnx")})
    runtimes = {"openvino": opener("openvino")} | ({"onnx": opener("onnx")} if precision == "fp32" else {})
    try:
        return fastest(folder, precision, runtimes)
    except RuntimeUnavailable as exc:
        encoder = fastest(folder, "fp32", {"onnx": opener("onnx", "fp32")})
        if encoder is not None:
            encoder.notes.append(f"embedding in fp32 on ONNX Runtime: {exc}")
        return encoder


def _fallback(encoder: OpenClipEncoder, why: str) -> OpenClipEncoder:
    encoder.notes.append(f"embedding with torch instead of ONNX Runtime: {why}")
    return encoder


def prepare_folder(encoder: OpenClipEncoder) -> Path:
    """The model's cache folder (made and recorded in refs.json); raises OSError where it cannot be."""
    from jrsearch.retrieval.encoders.onnx import ExportError

    spec = encoder.spec
    if spec.pretrained and encoder.weights is None:
        raise ExportError(f"the weights file of {spec.label()} could not be located to key the model cache")
    key = model_cache.model_key(spec, encoder.weights)
    folder = model_cache.folder_for(key, spec)
    folder.mkdir(parents=True, exist_ok=True)
    if model_cache.read_meta(folder) is None:
        write_json_atomic(folder / "meta.json", {"model": spec.name, "key": key})
    model_cache.remember(spec, encoder.weights, key)
    return folder


def share_text_tower(encoder: OpenClipEncoder) -> Path | None:
    """Write the numpy text tower into the model's cache folder unless it is there. A failure
    (a full disk, a read-only cache) becomes a note: text queries then take the slower path."""
    from jrsearch.retrieval.checksums import check_folder
    from jrsearch.retrieval.errors import JrsearchError
    from jrsearch.retrieval.hf_text_tower import export_query_tower
    from jrsearch.retrieval.query_model import EXPORT_DIR

    try:
        folder = model_cache.find(encoder.spec) or prepare_folder(encoder)
        export = folder / EXPORT_DIR
        if not (export / "meta.json").is_file() or check_folder(export).damaged:
            export_query_tower(encoder, folder)
    except JrsearchError as exc:  # ExportError, DiskFullError, LibraryError: each says what happened
        encoder.notes.append(str(exc))
        return None
    except OSError as exc:
        encoder.notes.append(f"the text-tower export for fast text queries was not written to "
                             f"{model_cache.cache_root()} ({exc.strerror or exc}); text queries take the slower path")
        return None
    return folder
