"""The one adapter between cluster jobs and the joint model's `Encoder`.

Cluster jobs move numpy arrays between processes, so they see the model only as: PIL image ->
float32 pixels (run by CPU decode tasks), pixels batch -> unit vectors, texts -> unit vectors.
When the encoder API changes, this module is the only one to adapt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class ClusterModel:
    """A loaded encoder seen through numpy: what decode tasks and embed actors call."""

    encoder: Any

    @property
    def spec(self) -> ModelSpec:
        return self.encoder.spec

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def image_size(self) -> int:
        return int(self.encoder.image_size)

    def pixel_transform(self) -> PixelTransform:
        """A picklable PIL -> float32 array function for decode workers (no model weights in it)."""
        return PixelTransform(self.encoder.preprocess)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(n, C, H, W) float32 -> (n, dim) float32 unit vectors."""
        return self.encoder.encode_images(np.ascontiguousarray(pixels, dtype=np.float32))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_texts(list(texts))


@dataclass
class PixelTransform:
    transform: Any

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self.transform(image), dtype=np.float32)


def load_model(spec: ModelSpec, device: str | None = None, precision: str = "auto") -> ClusterModel:
    """Load the joint model named by `spec` for a cluster job (GPU actors pass device='cuda')."""
    from jrsearch.retrieval.encoders import load_encoder

    return ClusterModel(load_encoder(spec, device=device, precision=precision))
