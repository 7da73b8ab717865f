"""What every encoder is: the `Encoder` protocol (kept apart from the registry in `__init__`, so
modules that only name the type import nothing that loads a model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from jrsearch.retrieval.types import ModelSpec


class Encoder(Protocol):
    """Maps media into the joint space; every output row is L2-normalised float32."""

    spec: ModelSpec
    dim: int
    device: str
    backend: str  # "onnx" or "torch"
    image_size: int  # the square side the image tower reads
    notes: list[str]  # what a person should know about how it was loaded (e.g. a fallback to torch)

    def preprocess(self, image) -> np.ndarray:
        """PIL image -> (3, h, w) float32 model input (runs in decode workers, thread-safe)."""

    def encode_images(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """`preprocess` outputs (a list, or stacked) -> (n, dim) float32; batches internally."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> (n, dim) float32."""
