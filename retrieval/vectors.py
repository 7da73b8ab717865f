"""Raw vectors in append-only float16 shard files, memory-mapped for reading.

Layout, one folder per media kind (the kind's FAISS index is built from it):

    LIBRARY/vectors/KIND/000000.f16   rows of `dim` little-endian float16, no header:
    LIBRARY/vectors/KIND/000001.f16   row r of a shard starts at byte r * dim * 2
    LIBRARY/vectors/KIND/000000.sums  one (first row, rows, CRC-32) record per region written

A shard holds at most `SHARD_ROWS` rows; the row after that starts the next file. The SQLite
store says where every vector lives (`vectors.shard`, `vectors.row`, keyed by the vector id that
is also the FAISS id) and how many rows each shard has committed (`vector_shards.rows`). Bytes
that no committed row points at do not exist, whatever the file holds.

Crash ordering, which makes a kill -9 at any moment lose nothing committed:
  write    1. write the rows at the tail shard's committed end (overwriting whatever an earlier
              crash left there), 2. fsync the file, and the folder when the file is new,
              3. commit the SQLite rows that point at them.
           A crash before 3 leaves bytes past the committed end: the next writer truncates them
           (`ShardSet.truncate`), a reader never looks at them. Each write also appends its
           region's CRC-32 to the shard's `.sums` file (fsynced with it); regions without a
           record (shards written before checksums) are "unknown", not damaged. A shard
           shorter than its committed rows is never written past (`ShardSet.damage`): the
           shard store marks the lost rows' files for re-indexing first.
  delete   the vector's SQLite row goes in the same commit as its item (a tombstone: the bytes
           stay, `vector_shards.live` drops).
  compact  a shard that is mostly dead has its live rows appended to the tail (1-2 above),
           then one commit moves their (shard, row) and marks the old shard dead; its file is
           unlinked after the commit, or by the next writer if a crash came first.

This module only moves bytes; the SQL side is the catalog's (`catalog.py`, `catalog_writer.py`),
and `shards.py` runs append, recover and compact over both.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jrsearch.retrieval.catalog import Catalog
from jrsearch.retrieval.checksums import check_file, write_checked
from jrsearch.retrieval.errors import LibraryError

SHARD_ROWS = 1 << 20  # 1,048,576 rows: 1 GiB per shard at 512-d
DTYPE = np.dtype("<f2")
SUFFIX = ".f16"
SUMS_SUFFIX = ".sums"
SUMS_DTYPE = np.dtype([("first_row", "<i8"), ("rows", "<i8"), ("crc32", "<u8")])  # one region written


@dataclass(frozen=True)
class ShardDamage:
    """What is wrong with one shard: the row ranges [first, end) that cannot be trusted, and how many
    committed rows no checksum covers (written before checksums: unknown, not damage)."""

    path: Path
    bad: tuple[tuple[int, int], ...]
    unchecked_rows: int
    reason: str

    @property
    def damaged(self) -> bool:
        return bool(self.bad)


class ShardSet:
    """The shard files of one kind: append rows, read rows by (shard, row), truncate, unlink."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = folder
        self.dim = dim
        self.row_bytes = dim * DTYPE.itemsize
        self._maps: dict[int, np.memmap] = {}

    def path(self, shard: int) -> Path:
        return self.folder / f"{shard:06d}{SUFFIX}"

    def sums_path(self, shard: int) -> Path:
        return self.folder / f"{shard:06d}{SUMS_SUFFIX}"

    def shards_on_disk(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem) for p in self.folder.glob(f"*{SUFFIX}") if p.stem.isdigit())

    def append(self, vectors: np.ndarray, tail: tuple[int, int],
               shard_rows: int = SHARD_ROWS) -> tuple[np.ndarray, np.ndarray]:
        """Write rows after `tail` = (shard, committed rows in it), fsynced; their (shards, rows).

        Nothing is committed here: the caller commits the SQLite rows afterwards."""
        data = np.ascontiguousarray(vectors, dtype=DTYPE)
        shard, used = tail
        shards = np.empty(len(data), dtype=np.int64)
        rows = np.empty(len(data), dtype=np.int64)
        start = 0
        while start < len(data):
            if used >= shard_rows:
                shard, used = shard + 1, 0
            count = min(len(data) - start, shard_rows - used)
            self._write(shard, used, data[start:start + count])
            shards[start:start + count] = shard
            rows[start:start + count] = np.arange(used, used + count)
            start += count
            used += count
        return shards, rows

    def _write(self, shard: int, row: int, data: np.ndarray) -> None:
        path = self.path(shard)
        new = not path.exists()
        if new:
            self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < row * self.row_bytes:  # never zero-fill committed rows a truncation lost
                raise LibraryError(f"vector shard {path} is shorter than its {row} committed rows; run "
                                   f"`jrsearch check --repair` on the library")
            os.ftruncate(fd, row * self.row_bytes)  # drop an uncommitted tail a crash left
            view = data.data.cast("B")
            written = 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], row * self.row_bytes + written)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._append_sum(shard, row, len(data), zlib.crc32(data.data.cast("B")))
        if new:
            _fsync_dir(self.folder)
        self._maps.pop(shard, None)

    def _append_sum(self, shard: int, row: int, rows: int, crc: int) -> None:
        """Record a region's CRC-32 after the records of rows before `row` (later ones a crash left go)."""
        kept = self._sums(shard)
        kept = kept[kept["first_row"] + kept["rows"] <= row]
        record = np.array([(row, rows, crc)], dtype=SUMS_DTYPE)
        fd = os.open(self.sums_path(shard), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, len(kept) * SUMS_DTYPE.itemsize)
            os.pwrite(fd, record.tobytes(), len(kept) * SUMS_DTYPE.itemsize)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sums(self, shard: int) -> np.ndarray:
        """The shard's region records, in row order (none for a shard written before checksums)."""
        try:
            raw = self.sums_path(shard).read_bytes()
        except OSError:
            return np.zeros(0, dtype=SUMS_DTYPE)
        return np.frombuffer(raw[:len(raw) - len(raw) % SUMS_DTYPE.itemsize], dtype=SUMS_DTYPE)

    def reseal(self, shard: int, bad: tuple[tuple[int, int], ...]) -> None:
        """Record the current CRC-32 of the regions in `bad` (whose rows no live vector points at any
        more: `ShardStore.repair` removed them), so they are not found damaged again."""
        sums = self._sums(shard).copy()
        resealed = [i for i, (first, count, _) in enumerate(sums.tolist()) if (first, first + count) in bad]
        if not resealed:
            return
        self._maps.pop(shard, None)
        mapped = self._map(shard, int((sums["first_row"] + sums["rows"])[resealed].max()))
        for i in resealed:
            first, count = int(sums["first_row"][i]), int(sums["rows"][i])
            sums["crc32"][i] = zlib.crc32(mapped[first:first + count].data.cast("B"))
        with open(self.sums_path(shard), "r+b") as handle:
            handle.write(sums.tobytes())
            os.fsync(handle.fileno())

    def damage(self, shard: int, rows: int, full: bool = False) -> ShardDamage:
        """Check a shard against its `rows` committed rows: its length always (one stat), its regions'
        CRC-32s when `full`."""
        path = self.path(shard)
        try:
            on_disk = path.stat().st_size // self.row_bytes
        except OSError:
            on_disk = 0
        bad: list[tuple[int, int]] = []
        reasons: list[str] = []
        if on_disk < rows:
            bad.append((on_disk, rows))
            reasons.append(f"{rows - on_disk} of its {rows} rows are missing (the file was cut short)")
        sums = self._sums(shard)
        sums = sums[sums["first_row"] + sums["rows"] <= min(rows, on_disk)]
        covered = int(sums["rows"].sum())
        if full and len(sums):
            self._maps.pop(shard, None)
            mapped = self._map(shard, int((sums["first_row"] + sums["rows"]).max()))
            for first, count, crc in sums.tolist():
                if zlib.crc32(mapped[first:first + count].data.cast("B")) != crc:
                    bad.append((first, first + count))
            if len(bad) > (on_disk < rows):
                reasons.append(f"{len(bad) - (on_disk < rows)} written regions fail their checksum")
        return ShardDamage(path, tuple(sorted(bad)), max(rows - covered, 0), "; ".join(reasons))

    def read(self, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows), dim) float32 for rows given as parallel (shard, row) arrays.

        Stored vectors are unit vectors; each row comes back renormalized, because float16
        rounding moves a norm by ~1e-4 and an exact match would then score above 1."""
        out = self.read_stored(shards, rows, np.empty((len(rows), self.dim), dtype=np.float32))
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]
        return np.divide(out, norms, out=out, where=norms > 0)

    def read_stored(self, shards: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The rows as stored (float16, not renormalized), into `out` (any float dtype) if given."""
        if out is None:
            out = np.empty((len(rows), self.dim), dtype=DTYPE)
        shards = np.asarray(shards, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return out
        groups: list[tuple[int, slice | np.ndarray]]
        if shards[0] == shards[-1] and (shards == shards[0]).all():
            groups = [(int(shards[0]), slice(None))]
        else:
            groups = [(int(shard), np.flatnonzero(shards == shard)) for shard in np.unique(shards)]
        for shard, where in groups:
            wanted = rows[where]
            first, last = int(wanted.min()), int(wanted.max())
            mapped = self._map(shard, last + 1)
            if last - first + 1 == len(wanted) and (np.diff(wanted) == 1).all():
                out[where] = mapped[first:last + 1]  # consecutive rows: one slice, no gather
            elif isinstance(where, slice) and out.dtype == mapped.dtype and out.flags.c_contiguous:
                np.take(mapped, wanted, axis=0, out=out, mode="clip")  # one gather, no temporary (bounds: _map)
            else:
                out[where] = mapped[wanted]
        return out

    def _map(self, shard: int, need_rows: int) -> np.memmap:
        mapped = self._maps.get(shard)
        if mapped is None or len(mapped) < need_rows:
            count = self.path(shard).stat().st_size // self.row_bytes
            if count < need_rows:
                raise LibraryError(f"vector shard {self.path(shard)} has {count} rows, the store points at row "
                                   f"{need_rows - 1}; run `jrsearch check --repair` on the library")
            mapped = self._maps[shard] = np.memmap(self.path(shard), dtype=DTYPE, mode="r", shape=(count, self.dim))
        return mapped

    def truncate(self, committed: dict[int, int]) -> None:
        """Cut every shard to its committed row count; remove files no commit knows (crash leftovers)."""
        self._maps.clear()
        for shard in self.shards_on_disk():
            rows = committed.get(shard)
            path = self.path(shard)
            if rows is None:
                self.unlink(shard)
            elif path.stat().st_size > rows * self.row_bytes:
                with open(path, "r+b") as handle:
                    handle.truncate(rows * self.row_bytes)
                    os.fsync(handle.fileno())

    def unlink(self, shard: int) -> None:
        self._maps.pop(shard, None)
        self.path(shard).unlink(missing_ok=True)
        self.sums_path(shard).unlink(missing_ok=True)

    def close(self) -> None:
        self._maps.clear()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SlotRuns:
    """Where vectors live, as runs of consecutive ids stored in consecutive rows of one shard.

    A library writes each batch of a kind as one such run, so a few thousand runs describe 10M
    vectors: finding 1,000 re-rank candidates is a `searchsorted` here instead of 1,000 SQLite
    lookups (8 ms at 10M). A deleted id ends a run, so every id a run covers is live. Saved beside
    the index (`save`), and trusted only while the kind's generation is the one it was made at.
    """

    generation: int
    first_id: np.ndarray
    count: np.ndarray
    shard: np.ndarray
    first_row: np.ndarray

    @classmethod
    def scan(cls, slots: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], generation: int) -> SlotRuns:
        """Runs from (ids, shards, rows) batches in id order (`Catalog.iter_slots`)."""
        starts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        seen, last = 0, None
        for ids, shards, rows in slots:
            if not len(ids):
                continue
            begins = np.ones(len(ids), dtype=bool)
            begins[1:] = (np.diff(ids) != 1) | (np.diff(shards) != 0) | (np.diff(rows) != 1)
            if last is not None:
                begins[0] = not (ids[0] == last[0] + 1 and shards[0] == last[1] and rows[0] == last[2] + 1)
            at = np.flatnonzero(begins)
            starts.append((at + seen, ids[at], shards[at], rows[at]))
            seen, last = seen + len(ids), (ids[-1], shards[-1], rows[-1])
        if not starts:
            return cls.empty(generation)
        position, first_id, shard, first_row = (np.concatenate(part) for part in zip(*starts, strict=True))
        return cls(generation, first_id, np.diff(np.append(position, seen)), shard, first_row)

    @classmethod
    def empty(cls, generation: int = -1) -> SlotRuns:
        nothing = np.zeros(0, dtype=np.int64)
        return cls(generation, nothing, nothing, nothing, nothing)

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(covered mask, shards, rows) for `ids`; shards and rows are meaningful where covered."""
        if not len(self.first_id):
            nowhere = np.zeros(len(ids), dtype=np.int64)
            return np.zeros(len(ids), dtype=bool), nowhere, nowhere
        run = np.searchsorted(self.first_id, ids, side="right") - 1
        inside = run >= 0
        run = np.maximum(run, 0)
        inside &= ids < self.first_id[run] + self.count[run]
        return inside, self.shard[run], self.first_row[run] + ids - self.first_id[run]

    def save(self, path: Path) -> None:
        def fill(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, generation=np.int64(self.generation), first_id=self.first_id, count=self.count,
                         shard=self.shard, first_row=self.first_row)

        write_checked(path, fill)

    @classmethod
    def load(cls, path: Path) -> SlotRuns | None:
        """The saved runs; None where absent, damaged (checked in full: a few KB) or unreadable: then
        SQLite says where each vector lives, and the next save writes the file again."""
        if check_file(path, full=True).damaged:
            return None
        try:
            with np.load(path) as saved:
                return cls(int(saved["generation"]), saved["first_id"], saved["count"], saved["shard"],
                           saved["first_row"])
        except Exception:  # any damage (BadZipFile, zlib.error, ...) means "not there"
            return None


class ShardSource:
    """`index.VectorSource` over one kind's shards: the store says which rows are live and where.

    `catalog` opens a `Catalog` for the duration of one call (a pooled connection for the library,
    the one read-only connection for the cold query path). `runs_file` is the kind's saved
    `SlotRuns`, used by `get` while its generation is current."""

    def __init__(self, catalog: Callable[[], AbstractContextManager[Catalog]], shards: ShardSet, kind: str,
                 runs_file: Path | None = None) -> None:
        self._catalog = catalog
        self.shards = shards
        self.kind = kind
        self.dim = shards.dim
        self.runs_file = runs_file
        self._runs: SlotRuns | None = None
        self._runs_key: tuple[int, int, int] | None = None  # (generation, mtime, size) _runs was checked at

    def __len__(self) -> int:
        with self._catalog() as catalog:
            return catalog.live_vectors(self.kind)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Up to n live vectors, uniform, streamed: only the chosen rows are read from the shards."""
        total = len(self)
        if total == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chosen = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
        parts, seen = [], 0
        for _, shards, rows in self._slots(SLOT_BATCH):
            lo, hi = np.searchsorted(chosen, [seen, seen + len(rows)])
            if hi > lo:
                picked = chosen[lo:hi] - seen
                parts.append(self.shards.read(shards[picked], rows[picked]))
            seen += len(rows)
        return np.concatenate(parts)[:n] if parts else np.zeros((0, self.dim), dtype=np.float32)

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for ids, shards, rows in self._slots(size):
            yield ids, self.shards.read(shards, rows)

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Rows for `ids` in their order; NaN rows for ids that are not live."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full((len(ids), self.dim), np.nan, dtype=np.float32)
        where, shards, rows = self._locate(ids)
        if len(where):
            out[where] = self.shards.read(shards, rows)
        return out

    def get_stored(self, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`get` as stored: float16 rows, not renormalized (filtered search scores them exactly as is),
        written into `out` ((len(ids), dim) float16) if given: when every id is live, gathered
        straight into it."""
        ids = np.asarray(ids, dtype=np.int64)
        if out is None:
            out = np.empty((len(ids), self.dim), dtype=DTYPE)
        where, shards, rows = self._locate(ids)
        if len(where) == len(ids) and bool(np.all(where[1:] > where[:-1])):
            return self.shards.read_stored(shards, rows, out)  # all live, in order (where is 0..n-1)
        out.fill(np.nan)
        if len(where):
            out[where] = self.shards.read_stored(shards, rows)
        return out

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions in `ids` that are live, their shards, their rows): slot runs, then SQLite."""
        with self._catalog() as catalog:
            covered, shards, rows = (self._current_runs(catalog) or SlotRuns.empty()).locate(ids)
            shards, rows = shards[covered], rows[covered]
            found, more_shards, more_rows = catalog.vector_slots(self.kind, ids[~covered])
        where = np.flatnonzero(covered)
        if len(found):
            position = {int(v): i for i, v in enumerate(ids)}
            where = np.append(where, np.fromiter((position[int(v)] for v in found), dtype=np.int64, count=len(found)))
            shards, rows = np.append(shards, more_shards), np.append(rows, more_rows)
        return where, shards, rows

    def _current_runs(self, catalog: Catalog) -> SlotRuns | None:
        """The saved runs if they describe the kind's current generation (one SELECT, one stat)."""
        if self.runs_file is None:
            return None
        state = catalog.index_state(self.kind)
        try:
            stat = self.runs_file.stat()
        except OSError:
            return None
        key = (state.generation if state else -1, stat.st_mtime_ns, stat.st_size)
        if key != self._runs_key:
            runs = SlotRuns.load(self.runs_file)
            self._runs = runs if runs is not None and state and runs.generation == state.generation else None
            self._runs_key = key
        return self._runs

    def _slots(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        with self._catalog() as catalog:
            yield from catalog.iter_slots(self.kind, size)


SLOT_BATCH = 1 << 16
