"""Which runtime embeds with an open_clip model: ONNX Runtime on a CPU, torch on a GPU.

`load_open_clip` with backend "auto" takes ORT whenever the model runs on the CPU in fp32 or
int8. A model met for the first time is loaded in torch once and exported into the model cache
(`onnx.export_model`); every later process opens the export without importing torch. Anything
the export cannot do (an unsupported model, no disk space, a read-only cache, a probe that does
not match torch) leaves the run on torch with one line in `encoder.notes`, never an error.

Every torch load on the way also shares the numpy text tower (`query_model`) in the model's
cache folder, which is what a cold `jrsearch query TEXT` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from jrsearch.retrieval import model_cache
from jrsearch.retrieval.errors import ModelUnavailableError
from jrsearch.retrieval.fileio import write_json_atomic
from jrsearch.retrieval.types import ModelSpec

BACKENDS = ("auto", "onnx", "torch")
ONNX_DIR = "onnx"


def _wants_gpu(device: str | None) -> bool:
    """True where torch should run the model: an explicit non-CPU device, or a visible NVIDIA GPU."""
    if device:
        return not device.startswith("cpu")
    gpus = Path("/proc/driver/nvidia/gpus")
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
    if hidden or not (gpus.is_dir() and any(gpus.iterdir())):
        return False  # no driver: no need to import torch to know there is no CUDA
    import torch

    return bool(torch.cuda.is_available())


def load_open_clip(spec: ModelSpec, device: str | None = None, precision: str = "auto", backend: str = "auto"):
    from jrsearch.retrieval.encoders.onnx import ONNX_PRECISIONS

    if backend not in BACKENDS:
        raise ModelUnavailableError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
    onnx_precision = "fp32" if precision == "auto" else precision
    if backend == "onnx":
        if device and not device.startswith("cpu"):
            raise ModelUnavailableError(
                f"--backend onnx runs on the CPU; drop --device {device} or use --backend torch")
        if onnx_precision not in ONNX_PRECISIONS:
            raise ModelUnavailableError(f"--backend onnx runs fp32 or int8, not {precision}; use --backend torch")
    elif backend == "torch" or onnx_precision not in ONNX_PRECISIONS or _wants_gpu(device):
        return _torch(spec, device, precision)
    return _onnx(spec, onnx_precision)


def _torch(spec: ModelSpec, device: str | None, precision: str):
    from jrsearch.retrieval.encoders.openclip import OpenClipEncoder

    encoder = OpenClipEncoder.load(spec, device=device, precision=precision)
    share_text_tower(encoder)
    return encoder


def _onnx(spec: ModelSpec, precision: str):
    from jrsearch.retrieval.encoders.onnx import ExportError, OnnxClipEncoder, export_model
    from jrsearch.retrieval.encoders.openclip import OpenClipEncoder

    folder = model_cache.find(spec)
    if folder is not None:
        try:
            found = OnnxClipEncoder.open(spec, folder / ONNX_DIR, precision)
        except ExportError as exc:
            return _fallback(OpenClipEncoder.load(spec, "cpu", precision), str(exc))
        if found is not None:
            return found
    encoder = OpenClipEncoder.load(spec, device="cpu", precision="fp32")
    share_text_tower(encoder)
    try:
        folder = prepare_folder(encoder)
        export_model(encoder, folder / ONNX_DIR)
        opened = OnnxClipEncoder.open(spec, folder / ONNX_DIR, precision)
        if opened is None:
            raise ExportError(f"the export in {folder} could not be read back")
        return opened
    except ExportError as exc:
        why = str(exc)
    except OSError as exc:
        why = f"could not write the ONNX export to {model_cache.cache_root()} ({exc.strerror or exc})"
    except Exception as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        why = f"{spec.label()} did not export to ONNX ({type(exc).__name__}: {first})"
    if precision != "fp32":
        encoder = OpenClipEncoder.load(spec, device="cpu", precision=precision)
    return _fallback(encoder, why)


def _fallback(encoder, why: str):
    encoder.notes.append(f"embedding with torch instead of ONNX Runtime: {why}")
    return encoder


def prepare_folder(encoder) -> Path:
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


def share_text_tower(encoder) -> Path | None:
    """Write the numpy text tower into the model's cache folder unless it is there. A failure
    (a full disk, a read-only cache) becomes a note: text queries then take the slower path."""
    from jrsearch.retrieval.errors import JrsearchError
    from jrsearch.retrieval.hf_text_tower import export_query_tower
    from jrsearch.retrieval.query_model import EXPORT_DIR

    try:
        folder = model_cache.find(encoder.spec) or prepare_folder(encoder)
        if not (folder / EXPORT_DIR / "meta.json").is_file():
            export_query_tower(encoder, folder)
    except JrsearchError as exc:  # ExportError, DiskFullError, LibraryError: each says what happened
        encoder.notes.append(str(exc))
        return None
    except OSError as exc:
        encoder.notes.append(f"the text-tower export for fast text queries was not written to "
                             f"{model_cache.cache_root()} ({exc.strerror or exc}); text queries take the slower path")
        return None
    return folder
