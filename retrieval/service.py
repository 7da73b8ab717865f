"""One search service, whatever holds the vectors: `SearchService`, and a library's (`LibraryService`).

A caller (the CLI's `query`, the web app, `jrsearch.open` in a notebook) asks a service what a
query can be (`modalities`), turns a query into a vector (`embed`), searches with a
`SearchRequest` (`search` -> `ResultSet`), and reads items and status. The other implementation
is an INDEXDIR's (`retrieval/cluster/search.ClusterService`). Services are safe to share between
threads (the web app's handlers run on a pool).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jrsearch.retrieval.catalog import ItemRecord
from jrsearch.retrieval.combine import combined_vector, term_vector
from jrsearch.retrieval.engine import SearchEngine
from jrsearch.retrieval.errors import JrsearchError, QueryError
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.request import Like, QueryTerm, SearchRequest
from jrsearch.retrieval.types import ModelChoice, ModelSpec, ResultSet

if TYPE_CHECKING:
    from jrsearch.retrieval.hf_text_tower import HfTextTower
    from jrsearch.retrieval.query_model import TextTower

TEXT_CACHE = 256  # query texts whose vectors are kept
SLOW_RELOAD_S = 0.5  # an index load this long or longer ...
RELOAD_SHARE = 0.1  # ... is repeated at most this share of the time


class UnsupportedQuery(QueryError):
    """A query of a modality this service cannot embed (the web API answers 415)."""


class SearchService(Protocol):
    """What every search front end uses; `root` is the library or INDEXDIR folder."""

    @property
    def root(self) -> Path: ...

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def text_encoder(self) -> str:
        """What turns text into vectors: "numpy text tower" or "torch"."""
        ...

    def modalities(self) -> tuple[str, ...]: ...

    def embed(self, modality: str, query: str | Path) -> np.ndarray:
        """One query vector: text is a string, the other modalities a file; `UnsupportedQuery`
        for a modality not in `modalities()`."""
        ...

    def embed_term(self, term: QueryTerm) -> np.ndarray:
        """One term of a combined query as a unit vector: words, a file, an image URL or an indexed
        item (`Like`: its stored vector)."""
        ...

    def search(self, vector: np.ndarray | None, request: SearchRequest) -> ResultSet:
        """The nearest results to `vector` plus `request.terms` (`combine.combined_vector`);
        `vector` None: the terms alone."""
        ...

    def item(self, item_id: int) -> ItemRecord | None: ...

    def status(self) -> dict[str, Any]: ...

    def warm(self) -> None:
        """Load what the first query would (indexes, the text encoder)."""
        ...

    def close(self) -> None: ...


def choose_model(choice: ModelChoice, stored: ModelSpec | None = None) -> ModelSpec:
    """The model a command uses: explicit options first, then the library's (`stored`), then the default."""
    from jrsearch.retrieval.encoders import DEFAULT_MODEL, SHIPPED_MODELS
    from jrsearch.retrieval.encoders.onnx_towers import folder_spec, is_repo_id
    from jrsearch.retrieval.model_check import check_choice

    check_choice(choice)
    name = choice.model or (stored.name if stored else DEFAULT_MODEL.name)
    if choice.checkpoint is not None and choice.checkpoint.is_dir():
        return folder_spec(choice.checkpoint, choice.model)
    if choice.model is not None and Path(choice.model).is_dir():
        return folder_spec(Path(choice.model))
    if choice.checkpoint is not None:
        if not choice.checkpoint.is_file():
            raise JrsearchError(f"checkpoint {choice.checkpoint} does not exist; "
                                "pass --checkpoint PATH to an open_clip checkpoint")
        return ModelSpec(name, str(choice.checkpoint.resolve()))
    if choice.pretrained is not None:
        return ModelSpec(name, "" if choice.pretrained.lower() == "none" else choice.pretrained)
    if stored and stored.name == name:
        return stored
    if name == DEFAULT_MODEL.name:
        return DEFAULT_MODEL
    if name in SHIPPED_MODELS:
        return SHIPPED_MODELS[name]
    if is_repo_id(name):
        return ModelSpec(name, "")
    raise JrsearchError(f"pass --pretrained TAG (or --checkpoint PATH) for model '{name}'")


class LibraryService:
    """A library's search: `SearchEngine` with fresh indexes per search, one torch call at a time.

    Every search first asks the store whether an index changed (`Library.refresh`, one small
    SELECT), so a long-lived service beside `jrsearch index` answers from the last committed state
    (an index that takes long to load is checked again only after ten load-times). Text queries use
    the exported numpy text tower where there is one (no torch is imported): it computes only the
    query's real tokens and runs in parallel; the last TEXT_CACHE texts' vectors are kept. Image
    and sound queries, and text without the export, run the model under a lock.
    """

    def __init__(self, library: Library, engine: SearchEngine | None = None, *,
                 search_threads: int | None = None, numpy_text: bool = True) -> None:
        self.library = library
        self.engine = engine or SearchEngine(library)
        self.search_threads = search_threads  # faiss threads per search (None: faiss's default)
        # numpy_text: the exported text tower answers text even where the engine was given a model,
        # device, precision or backend (same vectors to 1e-5); False: those run text queries too
        self.numpy_text = numpy_text
        self.slow_reload_s = SLOW_RELOAD_S
        self.reload_share = RELOAD_SHARE
        self._next_refresh = 0.0  # time.monotonic() before which the store is not asked again
        self._model_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    def open(cls, root: Path | None = None, choice: ModelChoice | None = None, *, nprobe: int | None = None,
             search_threads: int | None = None, numpy_text: bool = True) -> LibraryService:
        """The library at `root` (default: the user's) searched with the model `choice` names
        (default: the one that built it, on the best runtime here); `nprobe`: every search's default."""
        choice = choice or ModelChoice()
        library = Library.open(root)
        if nprobe:
            library.nprobe = nprobe
        stored = library.model()
        explicit = choose_model(choice, stored[0] if stored else None) if choice.names_model else None
        engine = SearchEngine(library, model=explicit, precision=choice.precision, device=choice.device,
                              backend=choice.backend)
        return cls(library, engine, search_threads=search_threads, numpy_text=numpy_text)

    @property
    def root(self) -> Path:
        return self.library.root

    @property
    def spec(self) -> ModelSpec:
        return self.engine.spec

    @property
    def text_tower(self) -> TextTower | HfTextTower | None:
        """The numpy text tower text queries go through, or None (the model runs them)."""
        return self.engine.text_tower if self.numpy_text else self.engine.query_tower

    @property
    def text_encoder(self) -> str:
        return "numpy text tower" if self.text_tower is not None else "torch"

    def modalities(self) -> tuple[str, ...]:
        return self.engine.modalities()

    def embed(self, modality: str, query: str | Path) -> np.ndarray:
        if modality == "text":
            return self._embed_text(str(query))
        if modality not in self.modalities():
            raise UnsupportedQuery(f"{modality} search needs an {modality} tower, and this library has none; "
                                   f"it searches by {' or '.join(self.modalities())}")
        with self._model_lock:
            return self.engine.embed(modality, query)

    def _embed_text(self, text: str) -> np.ndarray:
        if not text.strip():
            raise QueryError("empty query: type words to search for, or drop an image")
        with self._cache_lock:
            cached = self._text_cache.get(text)
            if cached is not None:
                self._text_cache.move_to_end(text)
                return cached
        tower = self.text_tower
        if tower is not None:
            vector = tower.encode_texts([text])[0]
        else:
            with self._model_lock:
                vector = self.engine.embed_text(text)
        vector.setflags(write=False)
        with self._cache_lock:
            self._text_cache[text] = vector
            if len(self._text_cache) > TEXT_CACHE:
                self._text_cache.popitem(last=False)
        return vector

    def like(self, like: Like) -> np.ndarray:
        """An indexed item's stored vector (`retrieval/like.py`): "more like this"."""
        from jrsearch.retrieval.like import like_vector

        return like_vector(self.library, like)

    def embed_term(self, term: QueryTerm) -> np.ndarray:
        return term_vector(term, self.embed, self.like)

    def search(self, vector: np.ndarray | None, request: SearchRequest) -> ResultSet:
        vector = combined_vector(vector, request.terms, self.embed_term)
        self._fresh_index(request.kind)
        if self.search_threads:
            import faiss

            faiss.omp_set_num_threads(self.search_threads)  # OpenMP's setting is per calling thread
        results = self.engine.search(vector, kind=request.kind, top_k=request.top_k, path_filter=request.filters,
                                     nprobe=request.nprobe, rerank=request.rerank)
        return ResultSet(tuple(results))

    def _fresh_index(self, kind: str) -> None:
        """Drop indexes another process changed and load this one (one thread loads; the others
        wait); a slow load is checked again only after `1 / reload_share` times its load time."""
        with self._index_lock:
            if time.monotonic() >= self._next_refresh:
                self.library.refresh()
            started = time.monotonic()
            self.library.index(kind)  # instant when loaded
            took = time.monotonic() - started
            if took >= self.slow_reload_s:
                self._next_refresh = time.monotonic() + took / self.reload_share

    def item(self, item_id: int) -> ItemRecord | None:
        return self.library.item(item_id)

    def status(self) -> dict[str, Any]:
        return self.library.status()

    def warm(self) -> None:
        self.library.refresh()
        self.library.indexes.load_all()
        self.embed("text", "warm up")
        if self.text_tower is None:
            return
        with self._model_lock:
            self.engine.encoder  # noqa: B018 - load torch now, for image uploads, not on the first one

    def close(self) -> None:
        self.library.close()
