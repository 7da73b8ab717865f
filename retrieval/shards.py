"""A library's shard store: every kind's vector shards (`vectors.ShardSet`), appended to inside a
store transaction, recovered after a crash, compacted once mostly dead.

Crash ordering (see `vectors.py`): `append` writes and fsyncs the bytes and records their rows in
the caller's transaction, which commits after; `recover` (by the writer holding the lock)
truncates bytes past the last commit and unlinks shards a finished compaction left; `compact`
moves a sparse shard's live rows to the tail in one commit, then unlinks it. The SQL is the
catalog's (`Catalog` reads, `CatalogWriter` writes); this module holds no statement and imports
no SQLAlchemy, so the cold query path reads vectors through it too.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval.catalog import Catalog
from jrsearch.retrieval.errors import FailureCode
from jrsearch.retrieval.paths import VECTORS_DIR, path_from_db, slot_runs_path
from jrsearch.retrieval.vectors import SHARD_ROWS, ShardDamage, ShardSet, ShardSource

COMPACT_BELOW = 0.5  # a shard is rewritten once fewer than this share of its rows are live
COMPACT_MIN_DEAD = 1 << 16  # ... and, for the last, growing shard, at least this many are dead

if TYPE_CHECKING:  # the cold query path only reads: it need not load the writer
    from jrsearch.retrieval.catalog_writer import CatalogWriter, Removed

Reads = Callable[[], AbstractContextManager[Catalog]]
Writes = Callable[[], AbstractContextManager["CatalogWriter"]]


class ShardStore:
    """The shard sets of one library, one per kind, opened on first use.

    `dim` says the model's dimension (asked when a kind's shards are first opened: a library has
    none before its model is adopted). `reads` lends a `Catalog`; `writes` opens a transaction
    (None on the cold path, which only reads)."""

    def __init__(self, root: Path, dim: Callable[[], int], reads: Reads, writes: Writes | None = None) -> None:
        self.root = root
        self._dim = dim
        self._reads = reads
        self._writes = writes
        self._sets: dict[str, ShardSet] = {}
        self.marked: list[tuple[ShardDamage, list[str]]] = []  # damage found, and the files marked to re-index

    def shard_set(self, kind: str) -> ShardSet:
        shards = self._sets.get(kind)
        if shards is None:
            shards = self._sets[kind] = ShardSet(self.root / VECTORS_DIR / kind, self._dim())
        return shards

    def source(self, kind: str) -> ShardSource:
        """A kind's stored vectors as an index's `VectorSource` (streamed, memory-mapped)."""
        return ShardSource(self._reads, self.shard_set(kind), kind, slot_runs_path(self.root, kind))

    def stored(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """Every vector of a kind, all in RAM: (ids, (n, dim) float32). For tests and small checks;
        indexes stream through `source(kind)` instead."""
        parts = list(self.source(kind).batches(1 << 16))
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self._dim()), dtype=np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def append(self, writer: CatalogWriter, kind: str, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write `vectors` after the kind's committed tail, fsynced, and count them in the writer's
        transaction (which holds the write lock); their (shards, rows). The caller inserts the
        rows that point at them before that transaction commits."""
        shards, rows = self.shard_set(kind).append(vectors, writer.shard_tail(kind), SHARD_ROWS)
        writer.count_shard_rows(kind, shards)
        return shards, rows

    def recover(self) -> Removed:
        """Truncate shard bytes past the last commit; unlink shards a compaction left dead; mark the
        files whose vectors a shard cut short has lost for re-indexing (`repair`). The vectors removed."""
        with self._reads() as catalog:
            if catalog.model() is None:
                return {}
        committed = self.committed()
        removed = self.repair([(kind, shard, damage) for kind, shard, damage in self.damage(committed)
                               if damage.damaged])
        folder = self.root / VECTORS_DIR
        kinds = set(committed) | ({p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set())
        for kind in kinds:
            self.shard_set(kind).truncate(committed.get(kind, {}))
        return removed

    def committed(self) -> dict[str, dict[int, int]]:
        """kind -> shard -> committed rows, of the live shards."""
        with self._reads() as catalog:
            rows = catalog.shards()
        committed: dict[str, dict[int, int]] = {}
        for kind, shard, count, dead in rows:
            if not dead:
                committed.setdefault(kind, {})[shard] = count
        return committed

    def damage(self, committed: dict[str, dict[int, int]] | None = None,
               full: bool = False) -> list[tuple[str, int, ShardDamage]]:
        """(kind, shard, what is wrong) of every committed shard: lengths always, checksums when `full`."""
        committed = self.committed() if committed is None else committed
        return [(kind, shard, self.shard_set(kind).damage(shard, rows, full))
                for kind, shards in committed.items() for shard, rows in sorted(shards.items())]

    def repair(self, damaged: list[tuple[str, int, ShardDamage]]) -> Removed:
        """Mark the files with vectors in damaged rows failed (`FailureCode.DAMAGED_VECTORS`) with their
        vectors removed, so the next `index` of their folders embeds them again; a shard cut short keeps
        the rows still on disk. Recorded in `marked`; the vectors removed, by kind."""
        removed: Removed = {}
        if not damaged:
            return removed
        assert self._writes is not None, "a read-only shard store repairs nothing"
        for kind, shard, damage in damaged:
            reason = f"its vectors in {damage.path} were damaged ({damage.reason}); index it again"
            with self._writes() as writer:
                gone, paths = writer.mark_damaged(kind, shard, damage.bad, reason, FailureCode.DAMAGED_VECTORS.value)
                path = damage.path
                writer.shorten_shard(kind, shard, path.stat().st_size // self.shard_set(kind).row_bytes
                                     if path.exists() else 0)
                writer.bump(set(gone) | {kind})
            self.shard_set(kind).reseal(shard, damage.bad)
            for vkind, pairs in gone.items():
                removed.setdefault(vkind, []).extend(pairs)
            self.marked.append((damage, [path_from_db(p) for p in paths]))
        return removed

    def compact(self, kinds: set[str]) -> None:
        """Rewrite shards of `kinds` that are mostly dead: their live rows move to the tail (a new
        shard when the tail itself is compacted). A shard that is not full yet waits until
        COMPACT_MIN_DEAD of its rows are dead, so small libraries do not rewrite on every delete."""
        for kind in kinds:
            with self._reads() as catalog:
                sparse = catalog.sparse_shards(kind, COMPACT_BELOW, SHARD_ROWS, COMPACT_MIN_DEAD)
            for shard in sparse:
                self._compact_shard(kind, shard)

    def _compact_shard(self, kind: str, shard: int) -> None:
        assert self._writes is not None, "a read-only shard store does not compact"
        shards = self.shard_set(kind)
        with self._writes() as writer:
            ids, old_rows = writer.retire_shard(kind, shard)
            moved = shards.read(np.full(len(old_rows), shard), old_rows)
            new_shards, new_rows = self.append(writer, kind, moved)  # after the mark: the last shard moves on
            writer.move_vectors(ids, new_shards, new_rows)
        shards.unlink(shard)

    def close(self) -> None:
        for shards in self._sets.values():
            shards.close()
