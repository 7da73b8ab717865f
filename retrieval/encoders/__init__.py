"""The joint model: one `Encoder` protocol, and a registry from model name to constructor.

The rest of jrsearch asks for an encoder by `ModelSpec` through `load_encoder`; it never
imports torch, open_clip or onnxruntime itself. Encoders take numpy and return numpy: images
go through `encoder.preprocess` (PIL -> (3, h, w) float32, in decode workers) and are batched
inside `encode_images`.
"""

from __future__ import annotations

from collections.abc import Callable

from jrsearch.retrieval.encoders.protocol import Encoder
from jrsearch.retrieval.types import ModelSpec

DEFAULT_MODEL = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
TINY_TEST_MODEL = ModelSpec("tiny-test", "")
TINY_MULTILINGUAL_MODEL = ModelSpec("tiny-multilingual", "")  # a 2-layer XLM-R text tower, random weights
SHIPPED_MODELS = {spec.name: spec for spec in (TINY_TEST_MODEL, TINY_MULTILINGUAL_MODEL)}

__all__ = ["DEFAULT_MODEL", "ENCODER_FACTORIES", "SHIPPED_MODELS", "TINY_MULTILINGUAL_MODEL", "TINY_TEST_MODEL",
           "Encoder", "load_encoder"]


def _open_clip(spec: ModelSpec, device: str | None, precision: str, backend: str) -> Encoder:
    from jrsearch.retrieval.encoders.backend import load_open_clip

    return load_open_clip(spec, device=device, precision=precision, backend=backend)


# Model family -> constructor(spec, device, precision, backend). Every open_clip model name goes
# to open_clip (ONNX Runtime on a CPU, torch on a GPU); another family registers its prefix here.
ENCODER_FACTORIES: dict[str, Callable[[ModelSpec, str | None, str, str], Encoder]] = {
    "open_clip": _open_clip,
}


def load_encoder(spec: ModelSpec, device: str | None = None, precision: str = "auto",
                 backend: str = "auto") -> Encoder:
    """Load the joint model named by `spec` (raises `ModelUnavailableError` with a remedy)."""
    family = spec.name.split(":", 1)[0] if ":" in spec.name else "open_clip"
    return ENCODER_FACTORIES[family](spec, device, precision, backend)


class LazyEncoder:
    """An encoder that loads on first use: a run with nothing to embed never opens a model."""

    def __init__(self, spec: ModelSpec, load: Callable[[], Encoder]) -> None:
        self.spec = spec
        self._load = load
        self._encoder: Encoder | None = None

    @property
    def loaded(self) -> Encoder | None:
        return self._encoder

    def get(self) -> Encoder:
        if self._encoder is None:
            self._encoder = self._load()
        return self._encoder

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)
