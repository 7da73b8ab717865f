"""`jrsearch serve --index INDEXDIR`: the `Searcher` interface over a cluster-built index.

The web app asks its searcher for vectors, results, items and status; this one answers from an
INDEXDIR (`retrieval.cluster.search.ClusterSearch`) instead of a library, so the page and the
HTTP API stay the same. Results whose serving shards did not all answer carry `partial`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from fastapi import HTTPException

from jrsearch.retrieval.cluster.search import CatalogItem, ClusterSearch
from jrsearch.retrieval.types import MediaKind, SearchResult


class PartialResults(list):
    """Results plus what they lack: `partial` is None, or the serving shards that did not answer."""

    partial: dict | None = None


class IndexSearcher:
    def __init__(self, search: ClusterSearch) -> None:
        self.engine = search  # the app reads engine.spec and engine.modalities()
        self.text_tower = None
        self._model_lock = threading.Lock()

    def warm(self) -> None:
        self.embed_text("warm up")

    def embed_text(self, text: str) -> np.ndarray:
        with self._model_lock:
            return self.engine.embed_text(text)

    def embed_file(self, path: Path, what: str) -> np.ndarray:
        if what not in self.engine.modalities():
            takes = " or ".join(self.engine.modalities())
            raise HTTPException(415, f"this index holds images only: search it by {takes}")
        with self._model_lock:
            return self.engine.embed_image(path)

    def search(self, vector: np.ndarray, kind: str, top_k: int, path_filter) -> list[SearchResult]:
        out = PartialResults()
        if kind != MediaKind.IMAGE:
            return out
        results, missing = self.engine.search(vector, top_k, path_filter)
        out.extend(results)
        if missing:
            shards = self.engine.manifest.shards
            out.partial = {"missing_shards": [shards[m].index for m in missing],
                           "vectors_missing": sum(shards[m].vectors for m in missing)}
        return out

    def item(self, item_id: int) -> CatalogItem | None:
        return self.engine.item(item_id)

    def status(self) -> dict:
        return self.engine.status()
