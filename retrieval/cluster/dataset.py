"""An embedding dataset in clip-retrieval's layout, on a local disk or any fsspec URL.

    DATASET/dataset.json                    what made it: model, dim, the shard plan, the sources
    DATASET/img_emb/img_emb_007.npy         float16 (rows, dim) unit vectors of shard 7
    DATASET/metadata/metadata_007.parquet   one row per vector, same order: image_path, caption,
                                            size, width, height, mtime_ns, id, and what the file
                                            says of itself (`media_metadata`): taken_at, taken_ts,
                                            taken_source, latitude, longitude, camera
    DATASET/stats/stats_007.json            items planned in the shard, embedded, failed (and why)

Numbers are zero-padded to the width of the shard count, so sorting names sorts shards; that is
how autofaiss and clip-retrieval's back end read them, and vector ids are global row numbers in
that order (row r of shard s has id offset[s] + r). The `id` column is the item's place in the
sources, `(shard << 32) | position`: stable across reruns, whatever failed to decode.

A shard is written atomically and in this order: stats, embeddings, metadata. Its metadata file
is the commit mark: a shard with one is complete and a resumed job skips it.
"""

from __future__ import annotations

import io
import json
import posixpath
import uuid
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.fileio import write_bytes_atomic
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem

MANIFEST = "dataset.json"
EMB_DIR, META_DIR, STATS_DIR = "img_emb", "metadata", "stats"
POSITION_BITS = 32
META_COLUMNS = ("image_path", "caption", "size", "width", "height", "mtime_ns", "id",
                "taken_at", "taken_ts", "taken_source", "latitude", "longitude", "camera")
# Datasets embedded before place and camera were kept lack the last six: dates are then mtime_ns.
FILE_METADATA_COLUMNS = ("taken_ts", "latitude", "longitude", "camera")


class DatasetError(JrsearchError):
    """An embedding dataset is missing, incomplete or made by another plan."""


def item_id(shard: int, position: int) -> int:
    return (shard << POSITION_BITS) | position


def split_item_id(value: int) -> tuple[int, int]:
    return value >> POSITION_BITS, value & ((1 << POSITION_BITS) - 1)


def _fs(url: str) -> tuple[AbstractFileSystem, str]:
    import fsspec

    return fsspec.core.url_to_fs(url)


@dataclass
class DatasetPlan:
    """What `cluster embed` writes: the model and how sources split into shards."""

    model: ModelSpec
    dim: int
    shards: int
    shard_size: int
    sources: list[str]
    items: int | None  # items in file-list shards (tar shards are counted as they are read)

    @property
    def width(self) -> int:
        return len(str(max(self.shards - 1, 0)))

    def to_json(self) -> dict:
        return {"format": "clip-retrieval embeddings (img_emb/*.npy float16, metadata/*.parquet)",
                "model": self.model.name, "pretrained": self.model.pretrained, "dim": self.dim,
                "shards": self.shards, "shard_size": self.shard_size, "sources": self.sources, "items": self.items}

    @classmethod
    def from_json(cls, data: dict) -> DatasetPlan:
        return cls(ModelSpec(data["model"], data["pretrained"]), int(data["dim"]), int(data["shards"]),
                   int(data["shard_size"]), list(data["sources"]), data.get("items"))


def write_bytes_atomically(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """A reader sees the old file or the new one: write beside it, then rename."""
    if getattr(fs, "protocol", None) in ("file", ("file", "local")) or type(fs).__name__ == "LocalFileSystem":
        write_bytes_atomic(Path(path), data)
        return
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with fs.open(tmp, "wb") as handle:  # object stores: a put is atomic, the move is a copy
        handle.write(data)
    fs.mv(tmp, path)


class DatasetWriter:
    """Writes shards of one plan; refuses a folder that holds another plan."""

    def __init__(self, url: str, plan: DatasetPlan) -> None:
        self.fs, self.root = _fs(url)
        self.url = url
        self.plan = plan
        manifest = posixpath.join(self.root, MANIFEST)
        if self.fs.exists(manifest):
            with self.fs.open(manifest, "rb") as handle:
                old = DatasetPlan.from_json(json.loads(handle.read()))
            if (old.model, old.shards, old.shard_size, old.sources) != (plan.model, plan.shards, plan.shard_size,
                                                                       plan.sources):
                raise DatasetError(f"{url} holds a dataset made from other sources or settings "
                                   f"({old.model.label()}, {old.shards} shards); pass another --out, or the "
                                   f"same sources and options to resume it")
        for sub in (EMB_DIR, META_DIR, STATS_DIR):
            self.fs.makedirs(posixpath.join(self.root, sub), exist_ok=True)
        write_bytes_atomically(self.fs, manifest, json.dumps(plan.to_json(), indent=2).encode())

    def _path(self, sub: str, shard: int, suffix: str) -> str:
        stem = {EMB_DIR: "img_emb", META_DIR: "metadata", STATS_DIR: "stats"}[sub]
        return posixpath.join(self.root, sub, f"{stem}_{shard:0{self.plan.width}d}{suffix}")

    def done(self) -> set[int]:
        """Shards already written (their metadata file, the commit mark, exists)."""
        names = self.fs.ls(posixpath.join(self.root, META_DIR), detail=False)
        found = set()
        for name in names:
            base = posixpath.basename(name)
            if base.startswith("metadata_") and base.endswith(".parquet"):
                found.add(int(base[len("metadata_"):-len(".parquet")]))
        return found

    def write_shard(self, shard: int, vectors: np.ndarray, metadata: dict[str, list], stats: dict) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        write_bytes_atomically(self.fs, self._path(STATS_DIR, shard, ".json"), json.dumps(stats).encode())
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(vectors, dtype=np.float16).reshape(-1, self.plan.dim))
        write_bytes_atomically(self.fs, self._path(EMB_DIR, shard, ".npy"), buffer.getvalue())
        rows = len(metadata["image_path"])  # a column not given is unknown (null) on every row
        table = pa.table({name: metadata.get(name, [None] * rows) for name in META_COLUMNS},
                         schema=pa.schema([("image_path", pa.string()), ("caption", pa.string()),
                                           ("size", pa.int64()), ("width", pa.int32()), ("height", pa.int32()),
                                           ("mtime_ns", pa.int64()), ("id", pa.int64()),
                                           ("taken_at", pa.string()), ("taken_ts", pa.float64()),
                                           ("taken_source", pa.string()), ("latitude", pa.float64()),
                                           ("longitude", pa.float64()), ("camera", pa.string())]))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_bytes_atomically(self.fs, self._path(META_DIR, shard, ".parquet"), sink.getvalue().to_pybytes())


@dataclass
class EmbeddingDataset:
    """A finished dataset, read lazily: vectors memory-mapped, metadata as Arrow tables."""

    url: str
    plan: DatasetPlan
    emb_files: list[str]
    meta_files: list[str]
    rows: np.ndarray  # rows per shard file, in sorted order
    offsets: np.ndarray = field(init=False)  # first global id of each shard file
    _fs: Any = None

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(self.rows)]).astype(np.int64)

    @classmethod
    def open(cls, url: str, require_complete: bool = True) -> EmbeddingDataset:
        fs, root = _fs(url)
        manifest = posixpath.join(root, MANIFEST)
        if not fs.exists(manifest):
            raise DatasetError(f"{url} is not an embedding dataset (no {MANIFEST}); make one with "
                               f"`jrsearch cluster embed SOURCES --out {url}`")
        with fs.open(manifest, "rb") as handle:
            plan = DatasetPlan.from_json(json.loads(handle.read()))
        emb = sorted(p for p in fs.ls(posixpath.join(root, EMB_DIR), detail=False) if p.endswith(".npy"))
        meta = sorted(p for p in fs.ls(posixpath.join(root, META_DIR), detail=False) if p.endswith(".parquet"))
        emb_stems = [posixpath.basename(p)[len("img_emb_"):-4] for p in emb]
        meta_stems = [posixpath.basename(p)[len("metadata_"):-8] for p in meta]
        meta_of = dict(zip(meta_stems, meta, strict=True))
        # a shard counts once committed (its metadata written)
        committed = [(p, s) for p, s in zip(emb, emb_stems, strict=True) if s in meta_of]
        emb = [p for p, _ in committed]
        if require_complete and len(meta) < plan.shards:
            raise DatasetError(f"{url} has {len(meta)} of {plan.shards} shards; run the same "
                               f"`jrsearch cluster embed` again to finish it")
        rows = np.array([_checked_rows(fs, p, meta_of[s], plan.dim) for p, s in committed], dtype=np.int64)
        return cls(url, plan, emb, meta, rows, _fs=fs)

    @property
    def ntotal(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return self.plan.dim

    def vectors(self, shard: int) -> np.ndarray:
        """Shard `shard` (its place in sorted order) as float16, memory-mapped where local."""
        path = self.emb_files[shard]
        if _is_local(self._fs):
            return np.load(path, mmap_mode="r")
        with self._fs.open(path, "rb") as handle:
            return np.load(io.BytesIO(handle.read()))

    def ids(self, shard: int) -> np.ndarray:
        return np.arange(self.offsets[shard], self.offsets[shard + 1], dtype=np.int64)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """`n` rows drawn uniformly from the whole dataset, float32, read shard by shard."""
        n = min(n, self.ntotal)
        picked = np.sort(np.random.default_rng(seed).choice(self.ntotal, n, replace=False))
        shard_of = np.searchsorted(self.offsets, picked, side="right") - 1
        parts = []
        for shard in np.unique(shard_of):
            rows = picked[shard_of == shard] - self.offsets[shard]
            parts.append(np.asarray(self.vectors(int(shard))[rows], dtype=np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def metadata_columns(self, shard: int, columns: tuple[str, ...]) -> pa.Table:
        """Shard `shard`'s metadata, only those of `columns` it has (memory-mapped where local)."""
        table = _read_table(self.meta_files[shard], self._fs)
        return table.select([name for name in columns if name in table.schema.names])

    @cached_property
    def has_file_metadata(self) -> bool:
        """True when every shard keeps date taken, place and camera (`FILE_METADATA_COLUMNS`); read
        from the parquet footers only."""
        import pyarrow.parquet as pq

        def names(path: str) -> list[str]:
            with self._fs.open(path, "rb") as handle:
                return list(pq.read_schema(handle).names)

        return all(set(FILE_METADATA_COLUMNS) <= set(names(path)) for path in self.meta_files)

    def metadata_counts(self) -> dict[str, int]:
        """`with_date_taken` (a date from the file itself, not its mtime) and `with_place`, as a
        library's status counts them; none where the dataset predates them."""
        if not self.has_file_metadata:
            return {}
        import pyarrow as pa
        import pyarrow.compute as pc

        from_file = pa.array(["exif", "container"])
        dated = placed = 0
        for shard in range(len(self.meta_files)):
            table = self.metadata_columns(shard, ("taken_source", "latitude"))
            dated += int(pc.sum(pc.is_in(table["taken_source"], value_set=from_file)).as_py() or 0)
            placed += table.num_rows - table["latitude"].null_count
        return {"with_date_taken": dated, "with_place": placed}

    def metadata(self, ids: list[int]) -> dict[int, dict]:
        """Metadata rows for global ids (unknown ids are left out)."""
        out: dict[int, dict] = {}
        wanted = np.asarray([i for i in ids if 0 <= i < self.ntotal], dtype=np.int64)
        shard_of = np.searchsorted(self.offsets, wanted, side="right") - 1
        for shard in np.unique(shard_of):
            table = _read_table(self.meta_files[int(shard)], self._fs)
            chosen = wanted[shard_of == shard]
            rows = table.take(chosen - self.offsets[shard]).to_pylist()
            out.update(zip(chosen.tolist(), rows, strict=True))
        return out


def _is_local(fs: AbstractFileSystem) -> bool:
    return type(fs).__name__ == "LocalFileSystem"


def _checked_rows(fs: AbstractFileSystem, npy: str, parquet: str, dim: int) -> int:
    """Rows of one committed shard, from the .npy header and the parquet footer alone; a `DatasetError`
    naming the file where either is damaged, truncated or disagrees with the other."""
    remedy = (f"delete {posixpath.basename(npy)} and {posixpath.basename(parquet)} and run the same "
              f"`jrsearch cluster embed` again to embed that shard anew")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fs.open(npy, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
        size = fs.size(npy)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{npy} is not a readable .npy shard ({exc}); {remedy}") from None
    if len(shape) != 2 or shape[1] != dim:
        raise DatasetError(f"{npy} holds an array of shape {shape}, not rows of {dim} values; {remedy}")
    needed = data_start + shape[0] * dim * dtype.itemsize
    if size < needed:
        raise DatasetError(f"{npy} is truncated ({size:,} bytes of {needed:,}); {remedy}")
    try:
        with fs.open(parquet, "rb") as handle:
            meta_rows = pq.read_metadata(handle).num_rows
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"{parquet} is not a readable parquet file ({exc}); {remedy}") from None
    if meta_rows != shape[0]:
        raise DatasetError(f"{parquet} has {meta_rows:,} rows and {npy} {shape[0]:,}; {remedy}")
    return int(shape[0])


@lru_cache(maxsize=64)
def _read_table_cached(path: str, fs_key: int) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path, memory_map=True)


def _read_table(path: str, fs: AbstractFileSystem) -> pa.Table:
    if _is_local(fs):
        return _read_table_cached(path, 0)
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        return pq.read_table(handle)
