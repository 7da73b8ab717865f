"""The `Tower` side of a joint image-text model, shared by its torch and ONNX Runtime backends:
`encode` and `embed_query` by modality, on top of each backend's `encode_texts`/`encode_images`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jrsearch.retrieval.errors import QueryError


class JointTowers:
    """Mixed into an `Encoder` class: text and image through the registry's `Tower` interface."""

    modalities: tuple[str, ...] = ("text", "image")
    preprocess: Callable[[Any], np.ndarray]  # each backend's: PIL image -> (3, h, w) float32

    def encode_images(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, modality: str, batch: Any) -> np.ndarray:
        return self.encode_texts(batch) if modality == "text" else self.encode_images(batch)

    def embed_query(self, modality: str, query: str | Path) -> np.ndarray:
        if modality == "text":
            if not str(query).strip():
                raise QueryError("empty query text; pass words to search for, or --image PATH")
            return self.encode_texts([str(query)])[0]
        from jrsearch.retrieval.imageio import open_image

        path = Path(query)
        if not path.is_file():
            raise QueryError(f"query image {path} does not exist")
        return self.encode_images([self.preprocess(open_image(path, name=str(path)))])[0]
