"""What every encoder is: the `Tower` protocol every registered model follows, and the `Encoder`
protocol of the joint image-text model (kept apart from the registry in `__init__`, so modules
that only name the types import nothing that loads a model)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    from PIL import Image


class Tower(Protocol):
    """A model in the registry: it maps the media of its `modalities` into the joint space.

    `encode` takes a batch of one modality's model input as numpy (strings for text), batches
    inside, and returns (n, dim) L2-normalised float32 rows. A library's modalities are the union
    of its towers' (`retrieval/towers.py`); nothing asks an encoder with `hasattr` what it can do.
    """

    spec: ModelSpec
    device: str
    modalities: tuple[str, ...]  # "text", "image", "audio"
    notes: list[str]  # what a person should know about how it was loaded (e.g. a fallback to torch)

    @property
    def dim(self) -> int:
        """The joint space's dimension."""

    def encode(self, modality: str, batch: Any) -> np.ndarray:
        """A batch of `modality`'s model input -> (n, dim) float32 (texts: strings; images:
        `preprocess` outputs; audio: (n, window_samples) waveforms)."""

    def embed_query(self, modality: str, query: str | Path) -> np.ndarray:
        """One query (a text, or a file of that modality) -> one (dim,) float32 vector; a query
        that cannot be used raises `QueryError`."""


class Encoder(Tower, Protocol):
    """The joint model's text and image towers; every output row is L2-normalised float32."""

    backend: str  # "onnx" or "torch"
    image_size: int  # the square side the image tower reads

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """PIL image -> (3, h, w) float32 model input (runs in decode workers, thread-safe)."""

    def encode_images(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """`preprocess` outputs (a list, or stacked) -> (n, dim) float32; batches internally."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> (n, dim) float32."""


class AudioTower(Tower, Protocol):
    """A sound tower: fixed-length windows of mono audio at `sample_rate` (the modality's
    preprocessing, as `Encoder.preprocess` is the image one's)."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def window_samples(self) -> int: ...

    @property
    def kind(self) -> str:
        """Where it comes from: "jrsearch" (`jrsearch train audio`) or "wav2clip"."""

    def check_image_model(self, spec: ModelSpec, dim: int) -> None:
        """`ModelMismatchError` unless the tower maps into the space of image model `spec`."""

    def windows(self, samples: np.ndarray, offset_s: float = 0.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """A waveform -> ((n, window_samples) windows, their (start_s, end_s))."""
