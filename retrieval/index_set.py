"""A library's index set: one FAISS index per media kind, opened from its file or rebuilt from the
shards, refreshed when another process has moved the store on, saved, retrained.

    LIBRARY/index/KIND.faiss       KIND's vectors in the index type the store names
    LIBRARY/index/KIND.faiss.codes/  a PQ index's codes by id (`code_table.py`), written with it
    LIBRARY/index/KIND.slots.npz   where they live (`vectors.SlotRuns`), at the same generation
    LIBRARY/index/KIND.columns/    what filters read of them (`filter_columns.py`), same generation

The store records which generation each file matches (`index_state`); a file behind its store
(a crash, a kill -9) is rebuilt from the shards on the next open, and so is one that fails its
checksum (`checksums.py`: its size on every open, its bytes too up to FULL_CHECK_MAX) or that faiss
cannot read: in memory with a note, and written again by the next save. Both query paths open indexes
here: `Library` through its `IndexSet`, the cold query path (`quick_search.py`) through one over
its read-only connection, which only takes a file that is current (`saved`) and never builds.
No SQL and no SQLAlchemy here: reads are the catalog's, the one write (`mark_built`) the
catalog writer's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval.catalog import IndexStateRow
from jrsearch.retrieval.checksums import check_file
from jrsearch.retrieval.diskspace import no_space_as_error
from jrsearch.retrieval.index import DEFAULT_NPROBE, VectorIndex, keeps_code_table
from jrsearch.retrieval.paths import index_path, slot_runs_path
from jrsearch.retrieval.shards import Reads, ShardStore, Writes
from jrsearch.retrieval.vectors import SLOT_BATCH, SlotRuns

# Index files up to this size are checked byte for byte on open: by a library (serve, index; CRC-32
# runs at ~250 MB/s on the shared 2-core VM: <= 0.25 s once per process) and by the cold query
# path (<= 1 ms of its ~0.4 s); larger ones by size only there, in full by `jrsearch check`.
FULL_CHECK_MAX = 64 << 20
FULL_CHECK_MAX_COLD = 256 << 10

if TYPE_CHECKING:  # filter columns are imported where used: an unfiltered cold query never loads them
    from jrsearch.retrieval.filter_columns import FilterColumns


class IndexSet:
    """The indexes of one library, loaded on first use and kept while the store agrees.

    `writes` is None where nothing may be written (the cold path); `check_writable` raises the
    library's read-only error before an index file would be written."""

    def __init__(self, root: Path, shards: ShardStore, reads: Reads, writes: Writes | None = None,
                 nprobe: int = DEFAULT_NPROBE, rerank: int | None = None,
                 check_writable: Callable[[], None] | None = None) -> None:
        self.root = root
        self.shards = shards
        self.nprobe = nprobe
        self.rerank = rerank  # candidates re-scored on the exact vectors (None: the index's default)
        self._reads = reads
        self._writes = writes
        self._check_writable = check_writable
        self._indexes: dict[str, VectorIndex] = {}
        self._columns: dict[str, FilterColumns] = {}  # built or loaded, each at its generation
        self._rebuild: set[str] = set()
        self._damaged: set[str] = set()  # kinds whose file was damaged: rebuilt, to be written again
        self._seen_generations: dict[str, int] = {}
        self.notes: list[str] = []  # one line per damaged file found (and rebuilt)

    def path(self, kind: str) -> Path:
        return index_path(self.root, kind)

    def kinds(self) -> list[str]:
        """Media kinds that have an index (possibly empty)."""
        with self._reads() as catalog:
            return list(catalog.index_states())

    def saved(self, kind: str, state: IndexStateRow | None = None) -> VectorIndex | None:
        """`kind`'s index file, memory-mapped, if it matches the store (`state`, read if not given);
        None where it is missing or behind."""
        if state is None:
            with self._reads() as catalog:
                state = catalog.index_state(kind)
        path = self.path(kind)
        if state is None or not state.current or not path.is_file():
            return None
        full_max = FULL_CHECK_MAX if self._writes is not None else FULL_CHECK_MAX_COLD
        check = check_file(path, full=path.stat().st_size <= full_max)
        why = check.reason if check.damaged else ""
        if not why:
            try:
                return VectorIndex.load(path, state.factory, self.nprobe, trained_on=state.trained_on,
                                        rerank=self.rerank, source=self.shards.source(kind))
            except RuntimeError as exc:  # faiss cannot read it
                why = f"faiss cannot read it: {str(exc).strip().splitlines()[-1][:120]}"
        self._damaged.add(kind)
        self.notes.append(f"{path} is damaged ({why}); rebuilt from the vector shards (the next `jrsearch index` "
                          f"or `jrsearch check --repair` writes it again)")
        return None

    def saved_columns(self, kind: str, state: IndexStateRow) -> FilterColumns | None:
        """`kind`'s saved filter columns if they describe the store's generation (`state`); never a build."""
        from jrsearch.retrieval.filter_columns import load_columns

        return load_columns(self.root, kind, state.generation)

    def columns(self, kind: str) -> FilterColumns | None:
        """`kind`'s filter columns at the store's generation: kept, saved, else built from SQLite
        (kept in memory; `save` writes them); None for a kind the library has never stored."""
        from jrsearch.retrieval.filter_columns import build_columns

        kind = str(kind)
        with self._reads() as catalog:
            state = catalog.index_state(kind)
            if state is None:
                return None
            kept = self._columns.get(kind)
            if kept is not None and kept.generation == state.generation:
                return kept
            columns = self.saved_columns(kind, state)
            if columns is None:
                columns = build_columns(catalog.filter_rows(kind), state.generation)
        self._columns[kind] = columns
        return columns

    def index(self, kind: str) -> VectorIndex | None:
        """The index for a kind (its name), loaded from its file or rebuilt from the shards if stale;
        None for a kind the library has never stored."""
        kind = str(kind)
        if kind in self._indexes:
            return self._indexes[kind]
        with self._reads() as catalog:
            state = catalog.index_state(kind)
        if state is None:
            return None
        index = self.saved(kind, state) or self._build(kind)
        index.rerank = self.rerank
        self._indexes[kind] = index
        return index

    def load_all(self) -> None:
        """Load every existing index so that writes can be mirrored into them incrementally."""
        for kind in self.kinds():
            self.index(kind)

    def refresh(self) -> list[str]:
        """Forget loaded indexes that another process has changed since; returns their kinds.

        A long-running reader (`jrsearch serve`) calls this per request: one small SELECT. A
        dropped index is loaded again, at the last committed state, on its next use.
        """
        with self._reads() as catalog:
            current = {kind: state.generation for kind, state in catalog.index_states().items()}
        seen = self._seen_generations
        dropped = [kind for kind in list(self._indexes) if seen.get(kind) != current.get(kind)]
        for kind in dropped:
            self._indexes.pop(kind, None)
        seen.clear()
        seen.update(current)  # an index loaded after this read is at least this new
        return dropped

    def retrain(self, kind: str) -> None:
        """Have the next `save` build `kind`'s index from scratch (train, then add)."""
        self._rebuild.add(str(kind))

    def apply(self, added: dict[str, tuple[np.ndarray, np.ndarray]], removed: dict[str, list[int]]) -> None:
        """Mirror a committed change in the loaded indexes; anything not loaded is rebuilt on save."""
        for kind, ids in removed.items():
            index = self._indexes.get(kind)
            if index is not None and not index.remove(np.array(ids)):
                self._rebuild.add(kind)
        for kind, (vectors, new_ids) in added.items():
            index = self._indexes.get(kind)
            if index is not None and kind not in self._rebuild:
                index.add(vectors, new_ids)

    def save(self) -> None:
        """Write every index whose file is behind the store; retrain where the size outgrew it."""
        with self._reads() as catalog:
            states = catalog.index_states()
        for kind, state in states.items():
            if state.generation == state.built_generation and not {kind} & (self._rebuild | self._damaged):
                self._save_slot_runs(kind, state.generation, only_if_missing=True)  # libraries indexed before them
                self._save_columns(kind, state.generation, only_if_missing=True)
                self._save_code_table(kind, state)
                continue
            if self._check_writable is not None:
                self._check_writable()
            index = self._indexes.get(kind)
            if index is None or kind in self._rebuild or index.outgrown(index.ntotal):
                index = self._indexes[kind] = self._build(kind)
            index.save(self.path(kind))  # a full disk here: the caller knows the size to ask for
            self._damaged.discard(kind)
            self._save_slot_runs(kind, state.generation)
            self._save_columns(kind, state.generation)
            assert self._writes is not None, "a read-only index set saves nothing"
            from jrsearch.retrieval.catalog_writer import utcnow  # not loaded on the cold (read-only) path

            with self._writes() as writer:  # another write landed meanwhile: it stays stale
                writer.mark_built(kind, state.generation, index.factory, index.trained_on, utcnow())

    def _build(self, kind: str) -> VectorIndex:
        self._rebuild.discard(kind)
        return VectorIndex.build_from(self.shards.source(kind), nprobe=self.nprobe)

    def _save_slot_runs(self, kind: str, generation: int, only_if_missing: bool = False) -> None:
        """Save where the kind's vectors live at `generation` (`vectors.SlotRuns`), for re-ranking."""
        path = slot_runs_path(self.root, kind)
        if self._writes is None:
            return
        if only_if_missing:
            saved = SlotRuns.load(path)
            if saved is not None and saved.generation == generation:
                return
        with self._reads() as catalog:
            runs = SlotRuns.scan(catalog.iter_slots(kind, SLOT_BATCH), generation)
        with no_space_as_error(self.root, "saving where the vectors live"):
            runs.save(path)

    def _save_code_table(self, kind: str, state: IndexStateRow) -> None:
        """Give a current PQ index saved before code tables (or whose table was lost) its table,
        encoded from the shards (~100 s at 10M vectors, once)."""
        if self._writes is None or not keeps_code_table(state.factory or ""):
            return
        index = self._indexes.get(kind) or self.saved(kind, state)
        if index is None or index.codes is not None:
            return
        table = index.add_code_table(self.shards.source(kind))
        with no_space_as_error(self.root, "saving the index's code table"):
            table.save(self.path(kind))

    def _save_columns(self, kind: str, generation: int, only_if_missing: bool = False) -> None:
        """Save the kind's filter columns at `generation` (built from SQLite unless kept at it).
        Best effort: where they cannot be written (a full disk), none are left, and the service
        builds them from the store (the cold path hands such searches to it)."""
        from jrsearch.retrieval.filter_columns import build_columns, save_columns, saved_generation

        if self._writes is None or (only_if_missing and saved_generation(self.root, kind) == generation):
            return
        columns = self._columns.get(kind)
        if columns is None or columns.generation != generation:
            with self._reads() as catalog:
                columns = build_columns(catalog.filter_rows(kind), generation)
        self._columns[kind] = columns
        save_columns(self.root, kind, columns)
