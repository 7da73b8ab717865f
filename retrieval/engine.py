"""Search in every direction over a library: encode the query, search the kind's index, join
the hits to the store in one query, filter, rank. A folder or metadata filter is resolved first,
on the kind's filter columns (`filter_columns.py`), and the search runs among the vectors it
allows (`filtered_search.py`); a glob is applied to the joined rows, as without columns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from jrsearch.retrieval.encoders import Encoder, load_encoder
from jrsearch.retrieval.errors import QueryError
from jrsearch.retrieval.filter_columns import filtered_ranked_search
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.query_file import check_query_file
from jrsearch.retrieval.ranking import SearchableIndex, ranked_search
from jrsearch.retrieval.request import Filters
from jrsearch.retrieval.towers import LibraryTowers
from jrsearch.retrieval.types import MediaKind, ModelSpec, SearchResult

if TYPE_CHECKING:
    from jrsearch.retrieval.hf_text_tower import HfTextTower
    from jrsearch.retrieval.index import VectorIndex
    from jrsearch.retrieval.query_model import TextTower


class SearchEngine:
    """A library plus the towers that built it (`LibraryTowers`), each loaded on first use."""

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
        self.towers = LibraryTowers(library, lambda: self.encoder, device=device)
        # the numpy text tower; False once known absent
        self._text_tower: TextTower | HfTextTower | Literal[False] | None = None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.spec, device=self._device, precision=self._precision,
                                         backend=self._backend)
        return self._encoder

    @property
    def text_tower(self) -> TextTower | HfTextTower | None:
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
        """What a query can be here: the library's towers' modalities (text and image from the
        joint model, audio where the library has an audio tower), known without loading any."""
        return self.towers.modalities()

    def embed(self, modality: str, query: str | Path) -> np.ndarray:
        """One query vector: `modality` is one of `modalities()`; text is a string, the others a file.
        Text goes through `embed_text` (the numpy text tower answers a cold query fastest)."""
        if modality == "text":
            return self.embed_text(str(query))
        check_query_file(Path(query), modality)
        return self.towers.get(modality).embed_query(modality, query)

    @property
    def query_tower(self) -> TextTower | HfTextTower | None:
        """The numpy text tower where text queries use it: it exists and no model, device,
        precision or backend was asked for (those run the encoder as asked)."""
        asked_for_model = (self._encoder is not None or self._device is not None
                           or (self._precision, self._backend) != ("auto", "auto"))
        return None if asked_for_model else self.text_tower

    def embed_text(self, text: str) -> np.ndarray:
        tower = self.query_tower if text.strip() else None
        if tower is not None:
            return tower.encode_texts([text])[0]
        return self.towers.get("text").embed_query("text", text)

    def search(self, query: np.ndarray, kind: str = MediaKind.IMAGE, top_k: int = 10,
               path_filter: Callable[[str], bool] | None = None, nprobe: int | None = None,
               rerank: int | None = None) -> list[SearchResult]:
        """Nearest stored vectors of `kind` (a kind's name) to one query vector, best first, one per
        item/text; `nprobe`, `rerank`: this search's (None: the index's)."""
        loaded = self.library.index(kind)
        if isinstance(path_filter, Filters) and path_filter.by_columns:
            columns = self.library.indexes.columns(kind)
            if columns is None:  # a kind the library has never stored
                return []
            return filtered_ranked_search(loaded, columns, query, top_k, path_filter, self.library.hits, nprobe, rerank,
                                          self.library.copies)
        index: SearchableIndex | None = loaded
        if loaded is not None and (nprobe is not None or rerank is not None):
            index = _Knobs(loaded, nprobe, rerank)
        return ranked_search(index, query, top_k, path_filter, self.library.hits, self.library.copies)



class _Knobs:
    """An index searched with one request's nprobe and rerank (the shared index is left as it is)."""

    def __init__(self, index: VectorIndex, nprobe: int | None, rerank: int | None) -> None:
        self.index, self.nprobe, self.rerank = index, nprobe, rerank

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k, nprobe=self.nprobe, rerank=self.rerank)
