"""FAISS vector indices named by their `index_factory` string.

The factory string is chosen from the collection size and stored in the library's manifest:
exact inner product for small collections, IVF-Flat for medium ones, IVF-PQ with exact
re-ranking (`RFlat`) for large ones. Vector ids are the store's `vectors.id` row ids.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

EXACT_MAX = 50_000  # exact search over 50k x 512 floats takes a few ms on two cores
IVF_FLAT_MAX = 1_000_000  # beyond this, raw float vectors outgrow memory: compress with PQ
DEFAULT_NPROBE = 32
REFINE_K_FACTOR = 4  # PQ candidates re-ranked on exact vectors per result wanted
TRAIN_POINTS_PER_LIST = 64  # faiss wants >= 39 points per centroid; sample at most 256
PQ_TRAIN_POINTS = 256 * 39  # a PQ sub-quantizer has 256 centroids


def choose_factory(n: int, dim: int) -> str:
    """The index_factory string jrsearch uses for a collection of `n` vectors of `dim`."""
    if n <= EXACT_MAX:
        return "IDMap,Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    nlist = min(nlist, 2 ** int(math.log2(max(1, n // 39))))  # >= 39 training points per list
    if n <= IVF_FLAT_MAX:
        return f"IVF{nlist},Flat"
    m = max(m for m in (1, 2, 4, 8, 16, 32, 64) if dim % m == 0 and m <= max(1, dim // 4))  # bytes/vector
    return f"IDMap2,IVF{nlist},PQ{m},RFlat"


def _gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """A faiss index over unit vectors (inner product = cosine), with ids and search knobs."""

    def __init__(self, index, factory: str, nprobe: int = DEFAULT_NPROBE, trained_on: int = 0) -> None:
        self.index = index
        self.factory = factory
        self.nprobe = nprobe
        self.trained_on = trained_on  # how many vectors the coarse quantizer saw (0: no training)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, dim: int, factory: str | None = None,
              nprobe: int = DEFAULT_NPROBE, seed: int = 0) -> "VectorIndex":
        """Train (when the type needs it) and fill an index; GPU training when faiss has a GPU."""
        import faiss

        factory = factory or choose_factory(len(vectors), dim)
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        trained_on = 0
        if not index.is_trained:
            ivf = faiss.extract_index_ivf(index)
            sample = min(len(vectors), max(ivf.nlist * TRAIN_POINTS_PER_LIST, PQ_TRAIN_POINTS))
            rows = np.random.default_rng(seed).choice(len(vectors), sample, replace=False)
            ivf.cp.seed = seed
            if _gpu_available():
                ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(dim))
            index.train(vectors[np.sort(rows)])
            trained_on = sample
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        return cls(index, factory, nprobe, trained_on)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ids; False where this index type cannot remove (the caller rebuilds)."""
        import faiss

        try:
            self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
        except RuntimeError:
            return False
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k); missing slots have id -1."""
        import faiss

        params = faiss.ParameterSpace()
        if "IVF" in self.factory:
            params.set_index_parameter(self.index, "nprobe", self.nprobe)
        if self.factory.endswith("RFlat"):
            params.set_index_parameter(self.index, "k_factor_rf", REFINE_K_FACTOR)
        k = max(1, min(k, self.ntotal))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, path: Path) -> None:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        import faiss

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            faiss.write_index(self.index, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path, factory: str, nprobe: int = DEFAULT_NPROBE, trained_on: int = 0) -> "VectorIndex":
        import faiss

        return cls(faiss.read_index(str(path)), factory, nprobe, trained_on)
