"""Search an INDEXDIR end to end: the query's vector, the shards (here or on Ray), the dataset's
metadata (Arrow, memory-mapped), ranked and filtered like a library's results."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from jrsearch.retrieval.catalog import ItemRecord
from jrsearch.retrieval.cluster.dataset import EmbeddingDataset
from jrsearch.retrieval.cluster.index_dir import IndexDir, IndexManifest
from jrsearch.retrieval.cluster.model import ClusterModel, load_model
from jrsearch.retrieval.combine import combined_vector, term_vector
from jrsearch.retrieval.errors import QueryError
from jrsearch.retrieval.ranking import EXTRA_COLUMNS, ranked_search
from jrsearch.retrieval.request import Like, QueryTerm, SearchRequest
from jrsearch.retrieval.service import UnsupportedQuery
from jrsearch.retrieval.types import ItemStatus, MediaKind, ModelSpec, Partial, ResultSet

METADATA_UNSUPPORTED = ("filters by place or camera (near, camera) need an INDEXDIR whose dataset keeps them, and "
                        "this one was embedded before jrsearch kept them: run `jrsearch cluster embed` again into a "
                        "new folder and build from it, or filter by folder, glob or date (here the files' "
                        "modification time)")


class ClusterService:
    """The `SearchService` of an INDEXDIR: its dataset and its model; `address` spreads the shards over a
    Ray cluster, and with `allow_partial` a search that lost shards says so in its `ResultSet.partial`.

    `compiled` (with `address`): fan queries out through a Ray Compiled Graph (experimental, see
    `router`): lower latency on one node, for a server that answers many queries."""

    def __init__(self, root: Path, address: str | None = None, nprobe: int | None = None,
                 allow_partial: bool = False, device: str | None = None, precision: str = "auto",
                 compiled: bool = False) -> None:
        self.root = root
        self.manifest = IndexManifest.read(root)
        self.dataset = EmbeddingDataset.open(self.manifest.dataset)
        if address is not None:
            from jrsearch.retrieval.cluster.router import ShardRouter
            from jrsearch.retrieval.cluster.session import connect

            connect(address)
            self.index: IndexDir | ShardRouter = ShardRouter(root, nprobe, allow_partial, compiled=compiled)
        else:
            self.index = IndexDir(root, nprobe)
        self._device, self._precision = device, precision
        self._model: ClusterModel | None = None
        self._lock = threading.Lock()  # a search and the shards it missed are read together
        self._model_lock = threading.Lock()  # one model call at a time
        self.built_at = datetime.fromtimestamp((root / "index.json").stat().st_mtime, timezone.utc)

    @property
    def spec(self) -> ModelSpec:
        return self.manifest.spec

    @property
    def text_encoder(self) -> str:
        return "torch"

    @property
    def model(self) -> ClusterModel:
        if self._model is None:
            self._model = load_model(self.spec, device=self._device, precision=self._precision)
        return self._model

    def modalities(self) -> tuple[str, ...]:
        """What a query can be: text and images (an INDEXDIR holds the joint model's image vectors)."""
        return ("text", "image")

    def embed(self, modality: str, query: str | Path) -> np.ndarray:
        if modality not in self.modalities():
            takes = " or ".join(self.modalities())
            raise UnsupportedQuery(f"this index holds images only: search it by {takes}")
        with self._model_lock:
            if modality == "text":
                return self._embed_text(str(query))
            return self._embed_image(Path(query))

    def _embed_text(self, text: str) -> np.ndarray:
        if not text.strip():
            raise QueryError("empty query text; pass words to search for, or --image PATH")
        return self.model.embed_texts([text])[0]

    def _embed_image(self, path: Path) -> np.ndarray:
        from jrsearch.retrieval.imageio import open_image

        if not path.is_file():
            raise QueryError(f"query image {path} does not exist")
        pixels = self.model.pixel_transform()(open_image(path, name=str(path)))
        return self.model.embed_pixels(pixels[None])[0]

    def embed_term(self, term: QueryTerm) -> np.ndarray:
        return term_vector(term, self.embed, _no_like)

    def search(self, vector: np.ndarray | None, request: SearchRequest) -> ResultSet:
        """Image results (an INDEXDIR holds nothing else); `nprobe` is the one it was opened with."""
        filters = request.filters
        if (filters.near is not None or filters.camera is not None) and not self.dataset.has_file_metadata:
            raise UnsupportedQuery(METADATA_UNSUPPORTED)
        vector = combined_vector(vector, request.terms, self.embed_term)
        if request.kind != MediaKind.IMAGE.value:
            return ResultSet()
        with self._lock:
            if filters.by_columns:  # a folder or a date: the matching ids first (the dataset's parquet)
                from jrsearch.retrieval.cluster.filters import cluster_filtered_search

                results = cluster_filtered_search(self.dataset, self.index, vector, request.top_k, filters, self._rows)
            else:
                results = ranked_search(self.index, vector, request.top_k, filters, self._rows)
            missing = list(self.index.missing)
        if not missing:
            return ResultSet(tuple(results))
        shards = self.manifest.shards
        partial = Partial([shards[m].index for m in missing], sum(shards[m].vectors for m in missing))
        return ResultSet(tuple(results), partial)

    def warm(self) -> None:
        self.embed("text", "warm up")

    def close(self) -> None:
        """Release the shard actors (a no-op for shards in this process)."""
        self.index.close()

    def _rows(self, ids: list[int]) -> list[Sequence[Any]]:
        rows = self.dataset.metadata(ids)
        return [(i, i, None, None, None, r["image_path"], MediaKind.IMAGE.value, r["caption"], None,
                 *(r.get(name) for name in EXTRA_COLUMNS)) for i, r in rows.items()]

    def item(self, item_id: int) -> ItemRecord | None:
        """A dataset row as the library's item record."""
        row = self.dataset.metadata([item_id]).get(item_id)
        if row is None:
            return None
        return ItemRecord(id=item_id, path=row["image_path"], kind=MediaKind.IMAGE.value,
                           status=ItemStatus.INDEXED, error=None, size=row["size"] or 0,
                           mtime_ns=row["mtime_ns"] if row["mtime_ns"] is not None else -1, content_hash=None,
                           indexed_at=self.built_at,
                           details={k: row[k] for k in ("width", "height") if row[k]})

    def status(self) -> dict[str, Any]:
        m = self.manifest
        return {"library": str(self.root), "model": m.model, "pretrained": m.pretrained, "dim": m.dim,
                "audio_model": None, "items": {MediaKind.IMAGE.value: {ItemStatus.INDEXED.value: m.ntotal}},
                "status": {ItemStatus.INDEXED.value: m.ntotal}, "texts": 0,
                "indexes": {MediaKind.IMAGE.value: {"factory": m.factory, "vectors": m.ntotal, "up_to_date": True,
                                                    "trained_on": m.trained_on,
                                                    "built_at": self.built_at.isoformat(),
                                                    "serving_shards": len(m.shards)}},
                "dataset": m.dataset,
                "bytes_on_disk": sum(p.stat().st_size for p in self.root.iterdir() if p.is_file()),
                **self.dataset.metadata_counts()}


def _no_like(like: Like) -> np.ndarray:
    raise UnsupportedQuery("more like this (like) reads a library's stored vectors; an INDEXDIR keeps them in "
                           "its dataset only: search it by --image PATH instead")
