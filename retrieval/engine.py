"""Search in every direction over a library: encode the query, search the kind's index, join
the hits to the store in one query, filter, rank."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval.encoders import Encoder, load_encoder
from jrsearch.retrieval.errors import QueryError
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.ranking import ranked_search
from jrsearch.retrieval.types import MediaKind, ModelSpec, SearchResult

if TYPE_CHECKING:
    from jrsearch.retrieval.encoders.audio import AudioEncoder
    from jrsearch.retrieval.hf_text_tower import HfTextTower
    from jrsearch.retrieval.query_model import TextTower


@dataclass(frozen=True)
class PathFilter:
    """Keep results under a directory and/or matching a glob (on the full path or the name)."""

    under: str | None = None
    glob: str | None = None

    @classmethod
    def make(cls, under: str | Path | None = None, glob: str | None = None) -> PathFilter | None:
        if under is None and glob is None:
            return None
        return cls(os.path.join(os.path.abspath(os.path.expanduser(under)), "") if under else None, glob)

    def __call__(self, path: str) -> bool:
        if self.under and not path.startswith(self.under):
            return False
        return not self.glob or fnmatch.fnmatch(path, self.glob) or fnmatch.fnmatch(os.path.basename(path), self.glob)


class SearchEngine:
    """A library plus the model that built it, loaded on first use."""

    def __init__(self, library: Library, model: ModelSpec | None = None, encoder: Encoder | None = None,
                 precision: str = "auto", device: str | None = None, backend: str = "auto") -> None:
        built = library.model()
        if built is None:
            raise QueryError(f"library {library.root} is empty; run `jrsearch index PATH` first")
        if model is not None:
            library.check_model(model)
        if encoder is not None:
            library.check_model(encoder.spec)
        self.library = library
        self.spec = built[0]
        self._encoder = encoder
        self._precision = precision
        self._device = device
        self._backend = backend
        self._audio_encoder: AudioEncoder | None = None  # the library's audio tower, loaded by the first audio query
        self._text_tower: TextTower | HfTextTower | bool | None = None  # numpy text tower; False once known absent

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.spec, device=self._device, precision=self._precision,
                                         backend=self._backend)
        return self._encoder

    @property
    def text_tower(self):
        """The numpy text tower exported for this library's model (model cache or library), or None.

        It computes only the query's real tokens (the torch tower runs all 77 positions): a warm
        ViT-B-32 text query takes ~30-45 ms instead of ~100 ms on two cores, same vector to 1e-5.
        """
        if self._text_tower is None:
            from jrsearch.retrieval.hf_text_tower import load_query_tower

            stored = self.library.model()
            self._text_tower = (load_query_tower(self.library.root, self.spec, stored[1]) if stored else None) or False
        return self._text_tower or None

    def modalities(self) -> tuple[str, ...]:
        """What a query can be here: text and images (the joint model), sound where the library
        has an audio tower (it maps into the same space)."""
        from jrsearch.retrieval.audiomodel import recorded_audio_model

        has_audio = self._audio_encoder is not None or recorded_audio_model(self.library) is not None
        return ("text", "image", "audio") if has_audio else ("text", "image")

    def embed(self, modality: str, query: str | Path) -> np.ndarray:
        """One query vector: `modality` is one of `modalities()`; text is a string, the others a file."""
        embedders = {"text": self.embed_text, "image": self.embed_image, "audio": self.embed_audio}
        if modality not in self.modalities():
            raise QueryError(f"library {self.library.root} cannot be searched by {modality}; it takes "
                             f"{', '.join(self.modalities())} (sound needs --audio-model PATH at index time)")
        return embedders[modality](query)  # type: ignore[operator]

    def embed_text(self, text: str) -> np.ndarray:
        if not text.strip():
            raise QueryError("empty query text; pass words to search for, or --image PATH")
        asked_for_model = (self._encoder is not None or self._device is not None
                           or (self._precision, self._backend) != ("auto", "auto"))
        if not asked_for_model and self.text_tower is not None:
            return self.text_tower.encode_texts([text])[0]
        return self.encoder.encode_texts([text])[0]

    def embed_image(self, path: Path) -> np.ndarray:
        from jrsearch.retrieval.imageio import open_image

        if not path.is_file():
            raise QueryError(f"query image {path} does not exist")
        image = open_image(path, name=str(path))
        return self.encoder.encode_images([self.encoder.preprocess(image)])[0]

    def embed_audio(self, path: Path) -> np.ndarray:
        """A sound file as one query vector: the pooled windows of the library's audio tower."""
        from jrsearch.retrieval.audioio import read_audio
        from jrsearch.retrieval.audiomodel import library_audio_encoder
        from jrsearch.retrieval.errors import MediaError

        if not path.is_file():
            raise QueryError(f"query sound {path} does not exist")
        if self._audio_encoder is None:
            self._audio_encoder = library_audio_encoder(self.library, device=self._device or "cpu")
        if self._audio_encoder is None:
            raise QueryError(f"library {self.library.root} has no audio tower; index sound or video with "
                             f"--audio-model PATH first (train one with `jrsearch train audio DIR`)")
        try:
            samples = read_audio(path, self._audio_encoder.sample_rate)
        except MediaError as exc:
            raise QueryError(f"cannot use {path} as a query: {str(exc).split(': ', 1)[-1]}") from None
        return self._audio_encoder.embed_clip(samples)

    def search(self, query: np.ndarray, kind: MediaKind = MediaKind.IMAGE, top_k: int = 10,
               path_filter: PathFilter | None = None) -> list[SearchResult]:
        """Nearest stored vectors of `kind` to one query vector, best first, one per item/text."""
        return ranked_search(self.library.index(kind), query, top_k, path_filter, self._rows)

    def _rows(self, vector_ids: list[int]) -> list:
        """Store rows (`ranking.ROW_COLUMNS`) for vector ids."""
        return self.library.hits(vector_ids)
