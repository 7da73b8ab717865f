"""The joint model: one `Encoder` protocol, and a registry from model name to constructor.

The rest of jrsearch asks for an encoder by `ModelSpec` through `load_encoder`; it never
imports torch or open_clip itself.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from retrieval.types import ModelSpec

DEFAULT_MODEL = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
TINY_TEST_MODEL = ModelSpec("tiny-test", "")
TINY_MULTILINGUAL_MODEL = ModelSpec("tiny-multilingual", "")  # a 2-layer XLM-R text tower, random weights
SHIPPED_MODELS = {spec.name: spec for spec in (TINY_TEST_MODEL, TINY_MULTILINGUAL_MODEL)}


class Encoder(Protocol):
    """Maps media into the joint space; every output row is L2-normalised float32."""

    spec: ModelSpec
    dim: int
    device: str
    image_size: int  # the square side the image tower reads

    def image_transform(self, image) -> "object":
        """PIL image -> model input tensor (runs in decode workers, must be picklable)."""

    def encode_images(self, batch) -> np.ndarray:
        """A stacked batch of `image_transform` outputs -> (n, dim) float32."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> (n, dim) float32."""


def _open_clip(spec: ModelSpec, device: str | None, precision: str) -> Encoder:
    from retrieval.encoders.openclip import OpenClipEncoder

    return OpenClipEncoder.load(spec, device=device, precision=precision)


# Model family -> constructor. Every open_clip model name goes to open_clip; a future family
# (an ONNX text tower, another library) registers its own prefix here.
ENCODER_FACTORIES: dict[str, Callable[[ModelSpec, str | None, str], Encoder]] = {
    "open_clip": _open_clip,
}


def load_encoder(spec: ModelSpec, device: str | None = None, precision: str = "auto") -> Encoder:
    """Load the joint model named by `spec` (raises `ModelUnavailableError` with a remedy)."""
    family = spec.name.split(":", 1)[0] if ":" in spec.name else "open_clip"
    return ENCODER_FACTORIES[family](spec, device, precision)
