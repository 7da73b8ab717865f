"""An INDEXDIR from `jrsearch cluster build`, searched in this process.

    INDEXDIR/index.json                 factory, dim, vectors, nprobe, the dataset it indexes, shards
    INDEXDIR/merged.index (+ .ivfdata)  one serving shard ...
    INDEXDIR/shard_000.index (+ .ivfdata) ... or several, each an on-disk IVF index

`.ivfdata` inverted lists are memory-mapped (faiss `OnDiskInvertedLists`): opening an index
reads its quantizer, not its codes. Every shard shares one trained quantizer, so searching each
with the same nprobe and merging the top-k gives what one merged index gives.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval.errors import JrsearchError, LibraryError
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    import faiss

MANIFEST = "index.json"


class IndexDirError(JrsearchError):
    """An INDEXDIR is missing or unreadable."""


class ShardUnavailableError(LibraryError):
    """A serving shard did not answer: the results would be missing part of the collection (503)."""


@dataclass
class ServingShard:
    index: str  # file name inside INDEXDIR
    ivfdata: str | None  # its on-disk inverted lists (None: an in-RAM index)
    vectors: int


@dataclass
class IndexManifest:
    factory: str
    dim: int
    ntotal: int
    nprobe: int
    dataset: str
    model: str
    pretrained: str
    trained_on: int
    shards: list[ServingShard] = field(default_factory=list)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.pretrained)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, root: Path) -> IndexManifest:
        path = root / MANIFEST
        if not path.is_file():
            raise IndexDirError(f"{root} is not a jrsearch index folder (no {MANIFEST}); build one with "
                                f"`jrsearch cluster build DATASET --out {root}`")
        data = json.loads(path.read_text())
        data["shards"] = [ServingShard(**s) for s in data["shards"]]
        return cls(**data)


def read_shard(root: Path, shard: ServingShard) -> faiss.Index:
    """Load one serving shard; its inverted lists stay on disk, memory-mapped."""
    import faiss

    path = root / shard.index
    if not path.is_file() or (shard.ivfdata and not (root / shard.ivfdata).is_file()):
        raise IndexDirError(f"{path} or its .ivfdata is missing; rebuild with `jrsearch cluster build`")
    if not shard.ivfdata:
        return faiss.read_index(str(path))
    with _c_stdout_silenced():  # faiss prints where it found the .ivfdata; `--json` output must stay JSON
        return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)


@contextlib.contextmanager
def _c_stdout_silenced() -> Iterator[None]:
    """Send what C code prints to stdout (file descriptor 1) to /dev/null for the block."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            try:
                yield
            finally:
                libc.fflush(None)
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def search_shard(index: faiss.Index, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-shard (scores, ids) -> the best k per query over all shards (inner product: higher first)."""
    scores = np.concatenate([s for s, _ in parts], axis=1)
    ids = np.concatenate([i for _, i in parts], axis=1)
    scores = np.where(ids < 0, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best_ids = np.take_along_axis(ids, order, axis=1)
    best = np.take_along_axis(scores, order, axis=1)
    return np.where(best_ids < 0, -1.0, best).astype(np.float32), best_ids


class IndexDir:
    """All serving shards of an INDEXDIR in this process (`router.ShardRouter` spreads them over Ray)."""

    def __init__(self, root: Path, nprobe: int | None = None) -> None:
        self.root = root
        self.manifest = IndexManifest.read(root)
        self.nprobe = nprobe or self.manifest.nprobe
        self.indexes = [read_shard(root, s) for s in self.manifest.shards]
        self.missing: list[int] = []  # shards the last search could not reach (always none here)

    @property
    def ntotal(self) -> int:
        return self.manifest.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, self.ntotal))
        return merge_topk([search_shard(index, queries, k, self.nprobe) for index in self.indexes], k)

    def close(self) -> None:
        """Nothing to release: the shards are this process's memory maps (`ShardRouter.close` ends actors)."""
