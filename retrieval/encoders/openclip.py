"""open_clip image and text towers behind the `Encoder` protocol."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jrsearch.retrieval.encoders.joint import JointTowers
from jrsearch.retrieval.encoders.preprocess import ImagePreprocess, stack
from jrsearch.retrieval.errors import ModelUnavailableError
from jrsearch.retrieval.settings import HF_HUB_OFFLINE, XDG_CACHE_HOME
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

CONFIG_DIR = Path(__file__).parent / "model_configs"
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
HUB_HOST = "huggingface.co"


_REGISTERED: list[Path] = []  # folders added by `register_model_configs`


def register_model_configs(folder: Path) -> None:
    """Add `folder`'s open_clip model configs; an HF text tower named "./x" or "../x" is relative to them."""
    import open_clip
    from open_clip import factory

    _REGISTERED.append(folder)
    open_clip.add_model_config(folder)  # re-reads every registered file, so resolve all of them again
    for config_file in (f for registered in _REGISTERED for f in registered.glob("*.json")):
        text_cfg = factory._MODEL_CONFIGS.get(config_file.stem, {}).get("text_cfg", {})  # no public setter
        for key in ("hf_model_name", "hf_tokenizer_name"):
            if str(text_cfg.get(key, "")).startswith(("./", "../")):
                text_cfg[key] = str((config_file.parent / text_cfg[key]).resolve())


def _register_shipped_configs() -> None:
    import open_clip

    if "tiny-test" not in open_clip.list_models():
        register_model_configs(CONFIG_DIR)


def hf_text_tower_name(spec: ModelSpec) -> str | None:
    """The Hugging Face text model behind `spec` (e.g. xlm-roberta-base), or None for a CLIP text tower."""
    import open_clip

    _register_shipped_configs()
    config = open_clip.get_model_config(spec.name) or {}
    return config.get("text_cfg", {}).get("hf_model_name") or None


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _resolve_weights(spec: ModelSpec) -> str | None:
    """What to pass as open_clip's `pretrained`: a local file, a cached/downloadable tag, or None.

    Checks the cache and the network up front so an offline machine gets one clear error at
    once, instead of huggingface_hub's minute of retries.
    """
    import open_clip

    if not spec.pretrained:
        return None
    path = Path(spec.pretrained).expanduser()
    if path.suffix in {".pt", ".pth", ".bin", ".safetensors"} or path.exists():
        if not path.is_file():
            raise ModelUnavailableError(
                f"checkpoint {path} does not exist; pass --checkpoint PATH to an open_clip checkpoint file"
            )
        return str(path)

    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    if not cfg:
        known = ", ".join(t for m, t in open_clip.list_pretrained() if m == spec.name) or "none"
        raise ModelUnavailableError(
            f"open_clip has no pretrained tag '{spec.pretrained}' for model '{spec.name}' "
            f"(known tags: {known}); or pass --checkpoint PATH"
        )
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo = hub.rstrip("/")
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, filename)
            if isinstance(cached, str):
                return cached
    elif cfg.get("url"):
        cache = Path(XDG_CACHE_HOME.get() or Path.home() / ".cache") / "clip"
        cached = cache / os.path.basename(cfg["url"])
        if cached.is_file():
            return str(cached)

    offline = HF_HUB_OFFLINE.text() not in ("", "0")
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else f"{HUB_HOST} is unreachable"
        raise ModelUnavailableError(
            f"weights for {spec.label()} are not in the local cache and {why}; download them on a "
            f"connected machine, or pass --checkpoint PATH to a local open_clip checkpoint "
            f"(use --model tiny-test to try jrsearch without weights)"
        )
    return spec.pretrained  # open_clip downloads it


def _local_file(weights: str | None, spec: ModelSpec) -> Path | None:
    """The file the weights were read from (a tag downloaded just now is in the hub cache by now)."""
    if weights is None:
        return None
    if Path(weights).is_file():
        return Path(weights)
    try:
        resolved = _resolve_weights(spec)
    except ModelUnavailableError:
        return None
    return Path(resolved) if resolved and Path(resolved).is_file() else None


def _check_hf_text_tower(spec: ModelSpec, hf_name: str) -> None:
    """A Hugging Face text tower needs transformers and its config + tokenizer files (local or cached)."""
    from jrsearch.retrieval.extras import require

    require("transformers", "multilingual", f"model '{spec.name}' (its Hugging Face text tower {hf_name})")
    if Path(hf_name).is_dir():
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(hf_name, "config.json"), str):
        return
    offline = HF_HUB_OFFLINE.text() not in ("", "0")
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else f"{HUB_HOST} is unreachable"
        raise ModelUnavailableError(
            f"model '{spec.name}' needs the Hugging Face files of its text tower '{hf_name}' (config and "
            f"tokenizer), which are not in the local cache and {why}; run the same command once on a connected "
            f"machine (or copy its ~/.cache/huggingface), or use --model tiny-multilingual to try it offline")


def embedding_dim(spec: ModelSpec) -> int:
    """The joint space's size: the config's `embed_dim` (a timm image tower has no `output_dim`)."""
    import open_clip

    _register_shipped_configs()
    return int((open_clip.get_model_config(spec.name) or {})["embed_dim"])


def hf_tokenizer_name(spec: ModelSpec) -> str | None:
    """The Hugging Face tokenizer repo a model's text tower reads (SigLIP's, an XLM-R's), or None for CLIP's BPE."""
    import open_clip

    _register_shipped_configs()
    text_cfg = (open_clip.get_model_config(spec.name) or {}).get("text_cfg", {})
    return text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name") or None


def _tokenizer(spec: ModelSpec) -> Any:
    """open_clip's tokenizer for `spec`; one line naming the missing Hugging Face tokenizer where it
    cannot be read (offline, not cached)."""
    import open_clip

    try:
        return open_clip.get_tokenizer(spec.name)
    except OSError as exc:
        repo = hf_tokenizer_name(spec) or spec.name
        offline = HF_HUB_OFFLINE.text() not in ("", "0")
        why = "HF_HUB_OFFLINE is set" if offline else (str(exc).splitlines()[0] if str(exc) else "it could not be read")
        raise ModelUnavailableError(
            f"model '{spec.name}' needs the Hugging Face tokenizer '{repo}', which is not in the local cache "
            f"and {why}; run the same command once on a connected machine (or copy its ~/.cache/huggingface)"
        ) from None


def _pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class OpenClipEncoder(JointTowers):
    """An open_clip model in inference mode: numpy in, batched, normalised float32 numpy out."""

    backend = "torch"

    def __init__(self, spec: ModelSpec, model: Any, preprocess: Callable[[Image.Image], torch.Tensor], tokenizer: Any,
                 device: str, dtype: torch.dtype, batch_size: int = 64) -> None:
        import open_clip

        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.notes: list[str] = []
        self.weights: Path | None = None  # the checkpoint file (None: random init); keys the model cache
        self.dim = embedding_dim(spec)
        self.preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
        self.preprocess: ImagePreprocess | _TorchTransform
        try:
            self.preprocess = ImagePreprocess.from_cfg(self.preprocess_cfg)
        except (KeyError, ValueError, TypeError):
            self.preprocess = _TorchTransform(preprocess)  # a transform the numpy one does not cover
        size = model.visual.image_size
        self.image_size = int(max(size) if isinstance(size, (tuple, list)) else size)

    @classmethod
    def load(cls, spec: ModelSpec, device: str | None = None, precision: str = "auto") -> OpenClipEncoder:
        import open_clip
        import torch

        if precision not in PRECISIONS:
            raise ModelUnavailableError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
        _register_shipped_configs()
        if spec.name not in open_clip.list_models():
            raise ModelUnavailableError(
                f"unknown model '{spec.name}'; see `python -c \"import open_clip; print(open_clip.list_models())\"` "
                f"or use --model tiny-test"
            )
        device = _pick_device(device)
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        weights = _resolve_weights(spec)
        hf_name = hf_text_tower_name(spec)
        extra = {}
        if hf_name:
            _check_hf_text_tower(spec, hf_name)
            extra["pretrained_text"] = False  # the open_clip weights hold the text tower too; none: random
        tokenizer = _tokenizer(spec)  # before the model: a missing tokenizer is told at once
        if weights is None:
            torch.manual_seed(0)  # random init must be identical in every process that loads it
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=weights, device=device,
                precision=precision if precision in ("fp16", "bf16") else "fp32", **extra,
            )
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelUnavailableError(
                f"could not load {spec.label()}: {first}; "
                f"pass --checkpoint PATH to a checkpoint for model '{spec.name}'"
            ) from None
        model.eval()
        if precision == "int8":
            if device != "cpu":
                raise ModelUnavailableError("int8 precision runs on the CPU only; use --precision fp16 on a GPU")
            # The image tower only: it is what indexing spends its time in, and open_clip's text
            # tower reads its Linear weights' dtype, which quantized layers no longer have.
            model.visual = torch.ao.quantization.quantize_dynamic(model.visual, {torch.nn.Linear}, dtype=torch.qint8)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        encoder = cls(spec, model, preprocess, tokenizer, device, dtype)
        encoder.weights = _local_file(weights if weights is not None else None, spec)
        return encoder

    def encode_images(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Preprocessed images ((3, h, w) each, or stacked) -> (n, dim)."""
        import torch

        batch = torch.from_numpy(stack(images))
        out = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                chunk = batch[start:start + self.batch_size].to(self.device, dtype=self.dtype, non_blocking=True)
                out.append(self.model.encode_image(chunk, normalize=True).float().cpu().numpy())
        return np.concatenate(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            features = self.model.encode_text(tokens, normalize=True)
        return features.float().cpu().numpy()


class _TorchTransform:
    """open_clip's own transform, as numpy: for models whose transform `ImagePreprocess` lacks."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.transform(image).numpy()
