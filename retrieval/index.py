"""FAISS vector indices named by their `index_factory` string, chosen by size and a memory budget.

The index holds what search needs in RAM; the raw vectors live elsewhere (the library's float16
shards) behind a `VectorSource`, which the index reads to train, to fill itself, and to re-rank its
top candidates exactly. The choice follows autofaiss: the richest code whose RAM fits the budget,

    n <= 50k           IDMap,Flat                         exact, 4*d B/vector
    fits as floats     IVF{nlist},Flat                    4*d B/vector
    fits as bytes      IVF{nlist},SQ8                     d B/vector, re-ranked
    otherwise          OPQ{m},IVF{nlist}[_HNSW32],PQ{m}   m B/vector (64 at 512-d), re-ranked

with nlist ~ 4*sqrt(n) and an HNSW coarse quantizer from 16,384 lists (a flat one costs a full
scan of the centroids per query and per added vector). The factory string names the index
completely; the library stores it. Vector ids are the store's vector ids.

A grown collection is added to the trained index; it is retrained only when its list count is
off by more than `RETRAIN_FACTOR` or its code no longer fits (`VectorIndex.outgrown`). Readers
open index files memory-mapped (`IO_FLAG_MMAP`): inverted lists are paged in as they are
searched, so opening a 10M-vector index reads almost nothing.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jrsearch.retrieval.checksums import write_checked
from jrsearch.retrieval.code_table import CodeTable, codes_path
from jrsearch.retrieval.faiss_import import load_faiss as _faiss
from jrsearch.retrieval.settings import INDEX_MEMORY

EXACT_MAX = 50_000  # exact search over 50k x 512 floats takes a few ms on two cores
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of index in RAM; JRSEARCH_INDEX_MEMORY (e.g. "4G") overrides
DEFAULT_NPROBE = 32
# Candidates re-scored on the exact vectors by default, per lossy code. PQ's order is much coarser
# than SQ8's: at 10M clustered vectors (OPQ64,PQ64) recall@10 is 0.62 re-ranking 100, 0.92 at 500
# and 0.95 at 1,000 (benchmarks/scale.py --rerank-sweep).
DEFAULT_RERANK = {"SQ8": 100, "PQ": 1000}
TRAIN_POINTS_PER_LIST = 64  # faiss wants >= 39 points per centroid
MAX_TRAIN_POINTS = 1 << 19  # k-means on more than 512k points costs minutes and gains nothing visible
PQ_TRAIN_POINTS = 256 * 64  # a PQ sub-quantizer has 256 centroids
HNSW_QUANTIZER_MIN_LISTS = 1 << 14
COARSE_TRAIN_ITERATIONS = 10  # k-means iterations for the inverted lists (faiss: 25); most of the gain is early
PQ_TRAIN_ITERATIONS = 10  # k-means iterations per PQ sub-quantizer (faiss: 25); codes are re-ranked anyway
OPQ_TRAIN_ITERATIONS = 8  # OPQ rotation updates (faiss: 50): minutes on two cores for little recall
OPQ_TRAIN_POINTS = 1 << 14
RETRAIN_FACTOR = 4  # retrain when the ideal list count is this far from the trained one
ADD_BATCH = 1 << 16  # vectors per add() call while building: bounded RAM whatever the size
ID_BYTES = 8  # an int64 id per vector in an inverted list
CODE_TABLE_TRAIN_POINTS = 1 << 16  # the code table's PQ: 256 points per centroid (~10 s at 512-d)
# The code table's PQ has a byte per CODE_TABLE_DIMS dimensions (64 at 512-d), whatever the index's own
# code: it ranks a filter's thousands of matches, which a budget's PQ8 cannot (200k vectors, OPQ8 index,
# 10k matching: recall@10 0.55 with the table at the index's PQ8).
CODE_TABLE_DIMS = 8


class VectorSource(Protocol):
    """Where an index reads raw vectors: one per media kind (the library's shards, or arrays).

    Vectors are unit-norm float32 rows keyed by int64 vector ids. The library implements this over
    memory-mapped float16 shards; `ArraySource` implements it over arrays for tests and benchmarks.
    """

    dim: int

    def __len__(self) -> int:
        """How many live (not deleted) vectors."""
        ...

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """(min(n, len), dim) float32 rows drawn uniformly over live vectors, read without loading all."""
        ...

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every live vector once, in id order: (ids int64 (b,), vectors float32 (b, dim)), b <= size."""
        ...

    def get(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), dim) float32 rows for those ids (exact re-ranking); NaN rows for ids not live."""
        ...


class ArraySource:
    """A `VectorSource` over in-memory arrays (float16 or float32), for tests and benchmarks."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        self.ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64)[order])
        self.vectors = np.asarray(vectors)[order]
        self.dim = int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def __len__(self) -> int:
        return len(self.ids)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        if n >= len(self):
            return self.vectors.astype(np.float32)
        rows = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return self.vectors[rows].astype(np.float32)

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self), size):
            yield self.ids[start:start + size], self.vectors[start:start + size].astype(np.float32)

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.searchsorted(self.ids, ids).clip(0, max(0, len(self) - 1))
        found = (self.ids[rows] == ids) if len(self) else np.zeros(len(ids), bool)
        out = self.vectors[rows].astype(np.float32)
        out[~found] = np.nan
        return out


def require_faiss() -> None:
    """`MissingExtraError` now where faiss is missing: before a run embeds anything, not after."""
    _faiss()


# -- choosing an index ----------------------------------------------------------------------


def memory_budget() -> int:
    """Bytes the index may hold in RAM: JRSEARCH_INDEX_MEMORY ("512M", "4G", bytes) or 1 GiB."""
    return parse_size(INDEX_MEMORY.text()) or DEFAULT_MEMORY_BUDGET


def parse_size(text: str) -> int | None:
    """Bytes from "512M", "4G", "1.5T" or a plain number of bytes (binary units); None if unreadable."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?", text.strip().upper())
    if not match:
        return None
    return int(float(match[1]) * 1024 ** " KMGT".index(match[2] or " "))


def choose_nlist(n: int) -> int:
    """Inverted lists for n vectors: a power of two near 4*sqrt(n), with >= 39 training points each."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
    return max(1, min(nlist, 2 ** int(math.log2(max(1, n // 39)))))


def _codes(dim: int) -> list[tuple[str, int]]:
    """(codec, bytes per vector) from richest to smallest."""
    pq = [m for m in (dim // 4, 64, 32, 16, 8) if m > 0 and dim % m == 0]
    return [("Flat", 4 * dim), ("SQ8", dim)] + [(f"PQ{m}", m) for m in sorted(set(pq), reverse=True)]


def choose_factory(n: int, dim: int, budget: int | None = None, exact_max: int | None = None) -> str:
    """The index_factory string for `n` vectors of `dim` whose index should fit `budget` bytes of RAM.

    Up to `exact_max` (None: EXACT_MAX) vectors the index is exact (`IDMap,Flat`); callers that
    need inverted lists whatever the size (the cluster build merges and shards them) pass 0."""
    if n <= (EXACT_MAX if exact_max is None else exact_max):
        return "IDMap,Flat"
    budget = memory_budget() if budget is None else budget
    nlist = choose_nlist(n)
    codes = _codes(dim)
    codec = next((c for c, size in codes if n * (size + ID_BYTES) + _fixed_bytes(c, nlist, dim) <= budget),
                 codes[-1][0])
    quantizer = f"IVF{nlist}_HNSW32" if nlist >= HNSW_QUANTIZER_MIN_LISTS else f"IVF{nlist}"
    if codec.startswith("PQ"):
        return f"OPQ{codec[2:]},{quantizer},{codec}"
    return f"{quantizer},{codec}"


@dataclass(frozen=True)
class Layout:
    """What a factory string means for memory: parsed, not guessed from the file."""

    nlist: int  # 0: no inverted lists (exact)
    codec: str  # Flat, SQ8, PQ{m}
    opq: bool
    hnsw_quantizer: bool

    @classmethod
    def parse(cls, factory: str) -> Layout:
        ivf = re.search(r"IVF(\d+)(_HNSW\d+)?", factory)
        codec = re.search(r"(Flat|SQ8|PQ\d+)(?:x8)?(?:,RFlat)?$", factory)
        return cls(int(ivf[1]) if ivf else 0, codec[1] if codec else "Flat", factory.startswith("OPQ"),
                   bool(ivf and ivf[2]))

    def code_bytes(self, dim: int) -> int:
        return dict(_codes(dim)).get(self.codec, int(self.codec[2:]) if self.codec.startswith("PQ") else 4 * dim)

    @property
    def lossy(self) -> bool:
        return self.codec != "Flat"

    @property
    def default_rerank(self) -> int:
        """How many candidates a search re-scores exactly unless told otherwise (0: exact codes)."""
        return DEFAULT_RERANK["PQ" if self.codec.startswith("PQ") else self.codec] if self.lossy else 0


def _fixed_bytes(codec: str, nlist: int, dim: int) -> int:
    """RAM an index needs whatever its size: centroids (+ HNSW links), OPQ matrix, PQ codebooks."""
    fixed = nlist * dim * 4 + (nlist * 64 * 4 if nlist >= HNSW_QUANTIZER_MIN_LISTS else 0)
    if codec.startswith("PQ"):
        fixed += dim * dim * 4 + 256 * dim * 4
    return fixed


@dataclass(frozen=True)
class Footprint:
    """An index's RAM once warm (every list paged in) and its bytes on disk; a PQ index's code table
    (`code_table.py`: memory-mapped, paged in by filtered searches) apart."""

    memory_bytes: int
    disk_bytes: int
    memory_mapped: bool
    code_table_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"memory_bytes": self.memory_bytes, "disk_bytes": self.disk_bytes, "memory_mapped": self.memory_mapped,
                "code_table_bytes": self.code_table_bytes}


def keeps_code_table(factory: str) -> bool:
    """Whether an index of `factory` keeps a code table: inverted lists of PQ codes (the large regime)."""
    layout = Layout.parse(factory)
    return bool(layout.nlist) and layout.codec.startswith("PQ")


def code_table_width(dim: int) -> int:
    """Bytes of a code-table code at `dim` dimensions (one per CODE_TABLE_DIMS, or one per dimension
    where they do not divide)."""
    return dim // CODE_TABLE_DIMS if dim % CODE_TABLE_DIMS == 0 else dim


def footprint(factory: str, n: int, dim: int, path: Path | None = None) -> Footprint:
    """What `jrsearch status` shows per index: RAM from the factory and size, disk from the file."""
    layout = Layout.parse(factory)
    memory = n * (layout.code_bytes(dim) + ID_BYTES) + _fixed_bytes(layout.codec, layout.nlist, dim)
    disk = path.stat().st_size if path is not None and path.exists() else 0
    table = n * (code_table_width(dim) + ID_BYTES) if keeps_code_table(factory) else 0
    return Footprint(memory, disk, memory_mapped=layout.nlist > 0, code_table_bytes=table)


# -- GPU ------------------------------------------------------------------------------------


def gpu_count() -> int:
    """Visible GPUs when faiss is a GPU build (faiss-gpu), else 0."""
    faiss = _faiss()

    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def _gpu_assigner(centroids: np.ndarray) -> Any:
    """An exact nearest-centroid index on every GPU (untested here: no GPU on the dev machine)."""
    faiss = _faiss()

    flat = faiss.IndexFlatL2(centroids.shape[1])  # centroids are unit-norm: L2 order = inner-product order
    flat.add(centroids)
    return faiss.index_cpu_to_all_gpus(flat)


# -- the index ------------------------------------------------------------------------------


class VectorIndex:
    """A faiss index over unit vectors (inner product = cosine), with ids and search knobs.

    `source` (set by the library, or passed to `search`) is where exact re-ranking reads vectors;
    `rerank` is how many candidates it re-scores (0: none; None: the code's default, DEFAULT_RERANK).
    An index loaded memory-mapped is read-only; the first `add`, `remove` or `save` reads it into RAM.
    A PQ index also keeps its vectors' codes by id (`codes`, a `code_table.CodeTable`), which the
    filtered plan scores subsets on; it is trained, filled, saved and loaded with the index.
    """

    def __init__(self, index: Any, factory: str, nprobe: int = DEFAULT_NPROBE, trained_on: int = 0,
                 rerank: int | None = None, source: VectorSource | None = None,
                 codes: CodeTable | None = None) -> None:
        self.index = index
        self.factory = factory
        self.nprobe = nprobe
        self.trained_on = trained_on  # how many vectors the coarse quantizer saw (0: no training)
        self.rerank = rerank
        self.source = source
        self._codes = codes
        self._codes_beside: Path | None = None  # an index file whose code table is read on first use
        self._mapped_from: Path | None = None  # the file this index is memory-mapped from
        self._on_gpu = False

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def layout(self) -> Layout:
        return Layout.parse(self.factory)

    @property
    def wants_codes(self) -> bool:
        return keeps_code_table(self.factory)

    @property
    def codes(self) -> CodeTable | None:
        """The vectors' codes by id, None where this index has none (read from beside its file on
        first use, so a search that never filters never reads it)."""
        if self._codes is None and self._codes_beside is not None:
            self._codes = CodeTable.load(self._codes_beside)
            self._codes_beside = None
        return self._codes

    def rotate(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors in the space the codes are made in: through the index's transforms (OPQ), if any."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        for stage in _stages(self.index):
            x = np.ascontiguousarray(stage.apply(x), dtype=np.float32)
        return x

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build_from(cls, source: VectorSource, factory: str | None = None, nprobe: int = DEFAULT_NPROBE,
                   budget: int | None = None, seed: int = 0, assigner: Any = None,
                   use_gpu: bool | None = None) -> VectorIndex:
        """Train on a streamed sample of `source` and add all its vectors in batches.

        `factory` defaults to `choose_factory(len(source), source.dim, budget)`. With a GPU (faiss-gpu),
        k-means and the coarse assignment of added vectors run on it; `assigner` forces an exact
        nearest-centroid index for adding (tests pass a CPU one to exercise the GPU's code path);
        `use_gpu=False` keeps everything on the CPU (None: the GPU when there is one).
        """
        faiss = _faiss()

        factory = factory or choose_factory(len(source), source.dim, budget)
        index = faiss.index_factory(source.dim, factory, faiss.METRIC_INNER_PRODUCT)
        built = cls(index, factory, nprobe, source=source)
        if not index.is_trained:
            sample = source.sample(cls.train_size(index, len(source)), seed=seed)
            built.train(sample, seed=seed, use_gpu=use_gpu)
            if built.wants_codes:
                built._codes = built._train_codes(sample, seed)
        if assigner is None and use_gpu is not False and gpu_count() and built.layout.nlist:
            assigner = _gpu_assigner(built._centroids())
        for ids, vectors in source.batches(ADD_BATCH):
            built.add(vectors, ids, assigner=assigner)
        return built

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, dim: int, factory: str | None = None,
              nprobe: int = DEFAULT_NPROBE, seed: int = 0) -> VectorIndex:
        """`build_from` over arrays; the index keeps them as its re-ranking source."""
        return cls.build_from(ArraySource(ids, np.asarray(vectors, dtype=np.float32).reshape(-1, dim)),
                              factory, nprobe, seed=seed)

    @staticmethod
    def train_size(index: Any, n: int) -> int:
        """Vectors to train an empty `index` on, out of `n`."""
        faiss = _faiss()

        ivf = faiss.extract_index_ivf(index)
        return min(n, max(ivf.nlist * TRAIN_POINTS_PER_LIST, PQ_TRAIN_POINTS), max(MAX_TRAIN_POINTS, ivf.nlist * 39))

    def train(self, sample: np.ndarray, seed: int = 0, use_gpu: bool | None = None) -> None:
        """Train the coarse quantizer (spherical k-means) and any OPQ/PQ/SQ stage on `sample`."""
        faiss = _faiss()

        ivf = faiss.downcast_index(faiss.extract_index_ivf(self.index))
        ivf.cp.seed = seed
        ivf.cp.niter = COARSE_TRAIN_ITERATIONS
        ivf.cp.spherical = True  # unit vectors, inner product: centroids stay on the sphere
        if use_gpu is not False and gpu_count():
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(self.dim))
        elif ivf.nlist >= HNSW_QUANTIZER_MIN_LISTS:
            ivf.clustering_index = faiss.IndexHNSWFlat(self.dim, 32)  # a flat scan of 16k+ centroids is the cost
        for stage in _stages(self.index):
            if isinstance(stage, faiss.OPQMatrix):
                stage.niter, stage.max_train_points = OPQ_TRAIN_ITERATIONS, OPQ_TRAIN_POINTS
                stage.niter_pq, stage.niter_pq_0 = 2, PQ_TRAIN_ITERATIONS
        if hasattr(ivf, "pq"):
            ivf.pq.cp.niter = PQ_TRAIN_ITERATIONS
            ivf.do_polysemous_training = False  # minutes of training for Hamming filtering jrsearch does not use
        self.index.train(np.ascontiguousarray(sample, dtype=np.float32))
        self.trained_on = len(sample)

    def _train_codes(self, sample: np.ndarray, seed: int = 0) -> CodeTable:
        return CodeTable.train(self.rotate(sample[:CODE_TABLE_TRAIN_POINTS]), code_table_width(self.dim), seed)

    def add_code_table(self, source: VectorSource, seed: int = 0) -> CodeTable:
        """Give a PQ index saved without a code table (before there were any) one, and return it:
        trained on a sample of `source`, then every vector of it encoded."""
        if not self.wants_codes:
            raise ValueError(f"a {self.factory} index keeps no code table")
        table = self._train_codes(source.sample(min(len(source), CODE_TABLE_TRAIN_POINTS), seed=seed), seed)
        for ids, vectors in source.batches(ADD_BATCH):
            table.add(self.rotate(vectors), ids)
        self._codes, self._codes_beside = table, None
        return table

    def _centroids(self) -> np.ndarray:
        faiss = _faiss()

        quantizer = faiss.extract_index_ivf(self.index).quantizer
        return quantizer.reconstruct_n(0, quantizer.ntotal)

    # -- changing ---------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, ids: np.ndarray, assigner: Any = None) -> None:
        """Add vectors under their ids to the trained index (no retraining).

        With `assigner` (an exact nearest-centroid index, on a GPU when there is one) the coarse
        assignment is computed there and the codes are added with `IndexIVF.add_core`.
        """
        self._writable()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        codes = self.codes
        if (assigner is None and codes is None) or len(ids) == 0:
            self.index.add_with_ids(vectors, ids)
            return
        faiss = _faiss()

        x = self.rotate(vectors)  # OPQ: codes are made in the rotated space
        if codes is not None:
            codes.add(x, ids)
        if assigner is None:
            inner = faiss.downcast_index(self.index.index) if _stages(self.index) else self.index
            inner.add_with_ids(x, ids)
            self.index.ntotal = inner.ntotal
            return
        ivf = faiss.extract_index_ivf(self.index)
        _, assign = assigner.search(x, 1)
        ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(np.ascontiguousarray(assign[:, 0])))
        self.index.ntotal = ivf.ntotal

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ids; False where this index type cannot remove (the caller rebuilds)."""
        faiss = _faiss()

        self._writable()
        try:
            self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
        except RuntimeError:
            return False
        if self.codes is not None:
            self.codes.remove(ids)
        return True

    def outgrown(self, n: int, budget: int | None = None) -> bool:
        """True when `n` vectors call for another index: another code, or lists off by > RETRAIN_FACTOR.

        Crossing EXACT_MAX or the memory budget changes the code; within one code the trained
        quantizer keeps serving until the ideal list count is RETRAIN_FACTOR times more or fewer.
        """
        wanted = Layout.parse(choose_factory(n, self.dim, budget))
        have = self.layout
        if (wanted.codec, wanted.nlist > 0) != (have.codec, have.nlist > 0):
            return True
        return bool(have.nlist) and not (have.nlist / RETRAIN_FACTOR <= wanted.nlist <= have.nlist * RETRAIN_FACTOR)

    # -- searching --------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None, rerank: int | None = None,
               source: VectorSource | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k); missing slots have id -1.

        With a source (argument or `self.source`) and a re-rank depth > 0, the index proposes
        max(k, depth) candidates and their exact vectors, read through `source.get`, rank them.
        """
        faiss = _faiss()

        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(k, self.ntotal))
        source = source if source is not None else self.source
        depth = self.rerank_depth(rerank) if source is not None else 0
        params = faiss.GpuParameterSpace() if self._on_gpu else faiss.ParameterSpace()
        layout = self.layout
        if layout.nlist:
            probe = nprobe or self.nprobe
            params.set_index_parameter(self.index, "nprobe", probe)
            if layout.hnsw_quantizer and not self._on_gpu:
                params.set_index_parameter(self.index, "quantizer_efSearch", max(64, 2 * probe))
        fetch = max(k, min(self.ntotal, depth))
        scores, ids = self.index.search(queries, fetch)
        if depth == 0 or source is None:
            return scores[:, :k], ids[:, :k]
        return _rerank(queries, ids, source, k)

    def rerank_depth(self, rerank: int | None = None) -> int:
        chosen = rerank if rerank is not None else self.rerank
        if chosen is None:
            return self.layout.default_rerank
        return max(0, chosen)

    # -- files ------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically (a reader sees the old file or the new one, never half of one), with its
        checksum beside it (`checksums.py`)."""
        faiss = _faiss()

        self._writable()
        codes = self.codes
        write_checked(path, lambda tmp: faiss.write_index(self.index, str(tmp)))
        if codes is not None:
            codes.save(path)
        else:
            shutil.rmtree(codes_path(path), ignore_errors=True)

    @classmethod
    def load(cls, path: Path, factory: str, nprobe: int = DEFAULT_NPROBE, trained_on: int = 0,
             mmap: bool = True, rerank: int | None = None, source: VectorSource | None = None) -> VectorIndex:
        """Open an index file; memory-mapped by default, so inverted lists are read as searched."""
        faiss = _faiss()

        if not mmap:
            loaded = cls(faiss.read_index(str(path)), factory, nprobe, trained_on, rerank, source)
        else:
            loaded = cls(faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY),
                         factory, nprobe, trained_on, rerank, source)
            loaded._mapped_from = path
        loaded._codes_beside = path if loaded.wants_codes else None
        return loaded

    def _writable(self) -> None:
        """Read a memory-mapped index fully into RAM before it changes (mapped lists are read-only)."""
        if self._mapped_from is None:
            return
        faiss = _faiss()

        self.index = faiss.read_index(str(self._mapped_from))
        self._mapped_from = None

    def to_gpu(self) -> VectorIndex:
        """A copy searching on every visible GPU (faiss-gpu; untested here: no GPU on the dev machine).

        An HNSW coarse quantizer becomes a flat one on the GPU; PQ lookup tables are float16 (needed
        from 64 bytes per code); GPU searches return at most 2,048 results per query.
        """
        faiss = _faiss()

        self._writable()
        options = faiss.GpuMultipleClonerOptions()
        options.useFloat16 = True
        copy = VectorIndex(faiss.index_cpu_to_all_gpus(self.index, options), self.factory, self.nprobe,
                           self.trained_on, self.rerank, self.source, self.codes)
        copy._on_gpu = True
        return copy


def _stages(index: Any) -> list[Any]:
    """The vector transforms (OPQ) in front of an index, in order."""
    faiss = _faiss()

    if not isinstance(index, faiss.IndexPreTransform):
        return []
    return [faiss.downcast_VectorTransform(index.chain.at(i)) for i in range(index.chain.size())]


def _rerank(queries: np.ndarray, ids: np.ndarray, source: VectorSource, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of each query with its candidates, best k first; -1 where fewer."""
    valid = ids >= 0
    unique, inverse = np.unique(ids[valid], return_inverse=True)
    rows = source.get(unique) if len(unique) else np.zeros((0, queries.shape[1]), np.float32)
    exact = np.full(ids.shape, -np.inf, dtype=np.float32)
    query_of = np.nonzero(valid)[0]
    exact[valid] = np.einsum("ij,ij->i", rows[inverse], queries[query_of])
    exact[np.isnan(exact)] = -np.inf  # not live in the source: deleted since the index was saved
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(exact, order, axis=1)
    top = np.take_along_axis(ids, order, axis=1)
    top[~np.isfinite(scores)] = -1
    return scores, top
