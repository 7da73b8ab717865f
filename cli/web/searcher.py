"""The engine behind concurrent requests: indexes refreshed per request, one torch call at a time.

Every search first asks the store whether an index changed (`Library.refresh`, one small
SELECT), so a server running beside `jrsearch index` answers from the last committed state
(for an index that takes long to load, from a state at most ten load-times old).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from fastapi import HTTPException

from jrsearch.retrieval.engine import PathFilter, SearchEngine
from jrsearch.retrieval.errors import QueryError
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.types import SearchResult

TEXT_CACHE = 256  # query texts whose vectors are kept
SLOW_RELOAD_S = 0.5  # an index load this long or longer ...
RELOAD_SHARE = 0.1  # ... is repeated at most this share of the time


class Searcher:
    """The warm engine for concurrent requests: fresh indexes per request, one torch call at a time.

    Text queries use the library's exported numpy text tower where `jrsearch index` wrote one (as
    `jrsearch query` does): it computes only the query's real tokens and is safe to run in
    parallel. Otherwise, and for images and sounds, the engine's torch model runs under a lock.
    """

    def __init__(self, library: Library, engine: SearchEngine, search_threads: int | None = None) -> None:
        self.library = library
        self.engine = engine
        self.search_threads = search_threads
        built = library.model()
        self.text_tower = engine.text_tower if built else None
        self._model_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._next_refresh = 0.0  # time.monotonic() before which the store is not asked again
        self.slow_reload_s = SLOW_RELOAD_S
        self.reload_share = RELOAD_SHARE
        self._cache_lock = threading.Lock()
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def warm(self) -> None:
        self.library.refresh()
        self.library.indexes.load_all()
        self.embed_text("warm up")
        if self.text_tower is None:
            return
        with self._model_lock:
            self.engine.encoder  # noqa: B018 - load torch now, for image uploads, not on the first one

    def embed_text(self, text: str) -> np.ndarray:
        """The query's vector; the last TEXT_CACHE texts are remembered (the page asks again on a
        change of kind or filter)."""
        if not text.strip():
            raise QueryError("empty query: type words to search for, or drop an image")
        with self._cache_lock:
            cached = self._text_cache.get(text)
            if cached is not None:
                self._text_cache.move_to_end(text)
                return cached
        if self.text_tower is not None:
            vector = self.text_tower.encode_texts([text])[0]
        else:
            with self._model_lock:
                vector = self.engine.embed_text(text)
        vector.setflags(write=False)
        with self._cache_lock:
            self._text_cache[text] = vector
            if len(self._text_cache) > TEXT_CACHE:
                self._text_cache.popitem(last=False)
        return vector

    def embed_file(self, path: Path, what: str) -> np.ndarray:
        if what not in self.engine.modalities():
            raise HTTPException(415, f"{what} search needs an {what} tower, and this library has none; "
                                     f"it searches by {' or '.join(self.engine.modalities())}")
        with self._model_lock:
            return self.engine.embed(what, path)

    def search(self, vector: np.ndarray, kind: str, top_k: int, path_filter: PathFilter | None
               ) -> list[SearchResult]:
        self._fresh_index(kind)
        if self.search_threads:
            import faiss

            faiss.omp_set_num_threads(self.search_threads)  # OpenMP's setting is per calling thread
        return self.engine.search(vector, kind=kind, top_k=top_k, path_filter=path_filter)

    def _fresh_index(self, kind: str) -> None:
        """Drop indexes another process changed and load this one (one thread loads; the others wait).

        An index that is slow to load (a large one rebuilt from the store while `jrsearch index`
        is committing batches) is checked again only after `1 / reload_share` times its load time,
        so reloading takes at most that share of the server's time.
        """
        with self._index_lock:
            if time.monotonic() >= self._next_refresh:
                self.library.refresh()
            started = time.monotonic()
            self.library.index(kind)  # instant when loaded
            took = time.monotonic() - started
            if took >= self.slow_reload_s:
                self._next_refresh = time.monotonic() + took / self.reload_share
