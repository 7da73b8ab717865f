"""A library on disk, as one small facade: the store, the vector shards, one FAISS index per kind.

    LIBRARY/library.db            items, texts, where each vector lives, manifest, index state
    LIBRARY/vectors/KIND/*.f16    every vector as float16, append-only (`retrieval/vectors.py`)
    LIBRARY/index/KIND.faiss      KIND's vectors in the index type the store names

`Library` opens the store (`store.Store`: creating or migrating it under the write lock, or
read-only where the disk cannot be written), holds the one write lock, and delegates each job:

    lib.store     the catalog: every SQL statement (`catalog.Catalog` reads, `CatalogWriter` writes)
    lib.shards    the shard store (`shards.ShardStore`): append, recover, compact
    lib.indexes   the index set (`index_set.IndexSet`): open, refresh, save, retrain

Shard bytes are written and fsynced first, then the rows that point at them are committed; index
files are written after, atomically, and the store records which generation each file matches.
An index file behind its store (a crash, a kill -9) is rebuilt from the shards on the next open,
so the two never disagree for long. Readers get typed records (`ItemRecord`, `HitRow`, ...).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy.exc import DatabaseError, OperationalError

from jrsearch.retrieval import migrations
from jrsearch.retrieval.catalog import (
    AudioModelRecord,
    HitRow,
    ItemRecord,
    KnownFile,
    VectorRecord,
    damaged_error,
    is_damaged,
    is_locked,
    open_readable,
)
from jrsearch.retrieval.catalog_writer import CatalogWriter, ItemInsert, Removed, metadata_row, utcnow
from jrsearch.retrieval.diskspace import SQLITE_MARGIN, no_space_as_error
from jrsearch.retrieval.errors import FailureCode, LibraryError, ModelMismatchError
from jrsearch.retrieval.fileio import remove_stale_temps
from jrsearch.retrieval.index import DEFAULT_NPROBE, VectorIndex
from jrsearch.retrieval.index_set import IndexSet
from jrsearch.retrieval.media_metadata import MediaMetadata
from jrsearch.retrieval.paths import DB_NAME, INDEX_DIR, VECTORS_DIR, default_library_dir, path_to_db
from jrsearch.retrieval.shards import ShardStore
from jrsearch.retrieval.store import SCHEMA_VERSION, Store
from jrsearch.retrieval.types import ItemStatus, MediaKind, ModelSpec
from jrsearch.retrieval.vectors import SUFFIX as SHARD_SUFFIX

__all__ = ["AudioModelRecord", "FileRecord", "HitRow", "ImageRecord", "ItemRecord", "KnownFile", "Library",
           "LibraryModel", "RowDetails", "SoundRecord", "TextRecord", "VectorRecord", "VideoRecord"]

LOCK_NAME = "write.lock"

# -- what the indexer stores ----------------------------------------------------------------

@dataclass(kw_only=True)
class FileRecord:
    """What the indexer learned about one file, ready to be stored: the fields every kind has.

    Each kind's record below adds its own fields and returns them from `item_fields` (stored as
    data, `items.details`: a kind with fields of its own needs no schema change); a record of
    this base type stores a file with one plain vector row per vector (no text, no time range)."""

    path: str
    kind: str  # its kind's name (`MediaKind` for the shipped kinds)
    size: int
    mtime_ns: int
    content_hash: str | None
    status: ItemStatus
    error: str | None = None  # why it failed, as shown
    failure: FailureCode | None = None  # what code decides on (`items.failure`)
    vectors: np.ndarray | None = None  # (n, dim) float32, one row per vector of this file
    modality: str = "image"  # the tower that made the vectors
    metadata: MediaMetadata | None = None  # what the file says of itself (date taken, place, camera)

    def item_fields(self) -> dict[str, Any]:
        """The kind's own per-file fields (JSON values; unset ones left out)."""
        return {}

    def row_details(self) -> RowDetails | None:
        """Per vector row: text, time range, modality; None when every row is plain."""
        return None


@dataclass(frozen=True)
class RowDetails:
    texts: list[tuple[int, str]]  # (line, text) per vector row, or empty
    segments: list[tuple[float | None, float | None]]  # per vector row, or empty
    modalities: list[str]  # per vector row, or empty (then all are the record's modality)


@dataclass(kw_only=True)
class ImageRecord(FileRecord):
    kind: str = MediaKind.IMAGE
    width: int | None = None
    height: int | None = None

    def item_fields(self) -> dict[str, Any]:
        return _set(width=self.width, height=self.height)


@dataclass(kw_only=True)
class TextRecord(FileRecord):
    kind: str = MediaKind.TEXT
    modality: str = "text"
    texts: list[tuple[int, str]] = field(default_factory=list)  # (line, text) per vector row

    def row_details(self) -> RowDetails | None:
        return RowDetails(self.texts, [], []) if self.texts else None


@dataclass(kw_only=True)
class SoundRecord(FileRecord):
    kind: str = MediaKind.AUDIO
    modality: str = "audio"
    duration_s: float | None = None
    segments: list[tuple[float | None, float | None]] = field(default_factory=list)  # per vector row
    modalities: list[str] = field(default_factory=list)  # per vector row when they differ (video: image + audio)

    def item_fields(self) -> dict[str, Any]:
        return _set(duration_s=self.duration_s)

    def row_details(self) -> RowDetails | None:
        return RowDetails([], self.segments, self.modalities) if self.segments or self.modalities else None


@dataclass(kw_only=True)
class VideoRecord(SoundRecord):
    """Frames (modality "image") and soundtrack (modality "audio") of one video."""

    kind: str = MediaKind.VIDEO
    modality: str = "image"
    width: int | None = None
    height: int | None = None

    def item_fields(self) -> dict[str, Any]:
        return _set(width=self.width, height=self.height, duration_s=self.duration_s)


def _set(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


# -- what readers get -----------------------------------------------------------------------

class LibraryModel(NamedTuple):
    """The model a library's vectors come from, and their dimension."""

    spec: ModelSpec
    dim: int


class Library:
    """Open with `Library.open(root)`; a writer holds `root/write.lock` via `writing()`.

    A library whose disk is full or read-only opens read-only (`readonly`): it answers queries,
    and a write raises a `LibraryError` that says so."""

    def __init__(self, root: Path, nprobe: int = DEFAULT_NPROBE) -> None:
        from filelock import FileLock

        self.root = root
        self._lock = FileLock(str(root / LOCK_NAME))
        self.readonly = False
        self.store = self._open_store()
        self._model: LibraryModel | None = None  # fixed once written, so read once
        self.shards = ShardStore(root, self._dim, self.store.read, self.store.transaction)
        self.indexes = IndexSet(root, self.shards, self.store.read, None if self.readonly else self.store.transaction,
                                nprobe, check_writable=self._check_writable)

    @staticmethod
    def exists(root: Path | None = None) -> bool:
        """Whether a library is at `root` (default: the user's library folder)."""
        return ((root or default_library_dir()).expanduser() / DB_NAME).exists()

    @classmethod
    def open(cls, root: Path | None = None, create: bool = False, nprobe: int = DEFAULT_NPROBE) -> Library:
        root = (root or default_library_dir()).expanduser()
        if not cls.exists(root):
            if not create:
                raise LibraryError(f"no library at {root}; run `jrsearch index PATH` first or pass --library DIR")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LibraryError(f"cannot create library at {root}: {exc.strerror}; pass --library DIR") from None
        return cls(root, nprobe)

    def close(self) -> None:
        self.store.dispose()
        self.shards.close()

    @property
    def nprobe(self) -> int:
        return self.indexes.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.indexes.nprobe = value

    @property
    def rerank(self) -> int | None:
        """Candidates re-scored on the exact vectors (None: the index's default)."""
        return self.indexes.rerank

    @rerank.setter
    def rerank(self, value: int | None) -> None:
        self.indexes.rerank = value

    # -- opening: one lock, then schema work ------------------------------------------------

    def _open_store(self) -> Store:
        """The store over this library's file, created or migrated under the write lock.

        A file that cannot be opened for writing (a full disk, a read-only mount) is opened
        read-only instead; one that needs schema work then cannot be used, and says why."""
        db = self.root / DB_NAME
        try:
            store = Store.open(db)
            version = store.version()
        except (OperationalError, sqlite3.OperationalError) as exc:
            if is_locked(exc):
                raise self._locked_error() from None
            store = self._open_readonly(db, exc)
            version = store.version()
        except (DatabaseError, sqlite3.DatabaseError) as exc:
            if is_damaged(exc):
                raise damaged_error(db, exc) from None
            raise
        if version > SCHEMA_VERSION:
            raise LibraryError(f"library {self.root} was written by a newer jrsearch (schema version {version}, this "
                               f"one reads up to {SCHEMA_VERSION}); upgrade jrsearch to use it")
        if version < SCHEMA_VERSION:
            if self.readonly:
                need = "cannot be created" if version == 0 else f"needs an upgrade to schema version {SCHEMA_VERSION}"
                raise LibraryError(f"library {self.root} {need}, and its disk cannot be written (full or read-only); "
                                   f"free space there and run again")
            with self._locked():
                version = store.version()  # another process may have done it meanwhile
                with self._disk_errors("creating the library" if version == 0 else "upgrading the library"):
                    if version == 0:
                        migrations.create(store.engine)
                    elif version < SCHEMA_VERSION:
                        migrations.upgrade(store.engine, self.root, version)
        return store

    def _open_readonly(self, db: Path, cause: Exception) -> Store:
        try:
            probe, immutable = open_readable(db)
            probe.close()
        except sqlite3.Error:
            raise LibraryError(f"cannot open library {self.root}: {getattr(cause, 'orig', cause)}; "
                               f"check the disk it is on") from None
        self.readonly = True
        return Store.open(db, readonly=True, immutable=immutable)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise self._locked_error() from None
        try:
            yield
        finally:
            self._lock.release()

    def _locked_error(self) -> LibraryError:
        return LibraryError(
            f"another `jrsearch index` is writing to {self.root}; wait for it to finish "
            f"(or remove {self.root / LOCK_NAME} if no such process is running)")

    @contextmanager
    def writing(self) -> Iterator[None]:
        """An exclusive lock for one writer; a second `jrsearch index` fails at once, clearly.

        Taking it also clears what a crashed writer left: shard bytes past the last commit, shard
        files a finished compaction no longer needs, and temp files of a killed index save; and
        marks the files whose vectors a shard cut short lost for re-indexing (`notes` says which)."""
        self._check_writable()
        with self._locked():
            remove_stale_temps(self.root / INDEX_DIR, time.time())
            removed = self.shards.recover()
            self.indexes.apply({}, {kind: [vid for vid, _ in pairs] for kind, pairs in removed.items()})
            yield

    def _check_writable(self) -> None:
        if self.readonly:
            raise LibraryError(f"library {self.root} is open read-only (its disk is full or not writable); "
                               f"free space there and run the command again")

    def _disk_errors(self, doing: str = "writing to the library",
                     needed: int | None = None) -> AbstractContextManager[None]:
        """A full disk becomes one `DiskFullError` line naming the library; earlier commits stay."""
        return no_space_as_error(self.root, doing, needed)

    @contextmanager
    def _transaction(self, doing: str = "writing to the library",
                     needed: int | None = None) -> Iterator[CatalogWriter]:
        """One write transaction, refused on a read-only library, a full disk as one error."""
        self._check_writable()
        with self._disk_errors(doing, needed), self.store.transaction() as writer:
            yield writer

    # -- the model ------------------------------------------------------------------------

    def model(self) -> LibraryModel | None:
        if self._model is None:
            with self.store.read() as catalog:
                row = catalog.model()
            self._model = LibraryModel(ModelSpec(row.name, row.pretrained), row.dim) if row else None
        return self._model

    def check_model(self, spec: ModelSpec) -> None:
        """Refuse to mix models: vectors from two models do not share a space."""
        built = self.model()
        if built and built.spec != spec:
            raise ModelMismatchError(
                f"library {self.root} was built with {built.spec.label()}, not {spec.label()}; "
                f"omit --model/--pretrained to use the library's model, or pass --library DIR for another library")

    def adopt_model(self, spec: ModelSpec, dim: int) -> None:
        self.check_model(spec)
        if self.model() is None:
            with self._transaction() as writer:
                writer.adopt_model(SCHEMA_VERSION, spec.name, spec.pretrained, dim, utcnow())

    def _dim(self) -> int:
        model = self.model()
        if model is None:
            raise LibraryError(f"library {self.root} has no model yet; adopt one before writing vectors")
        return model.dim

    def audio_model(self) -> AudioModelRecord | None:
        with self.store.read() as catalog:
            return catalog.audio_model()

    def record_audio_model(self, record: AudioModelRecord) -> None:
        """Remember the audio tower (or where the same checkpoint moved to)."""
        with self._transaction() as writer:
            writer.record_audio_model(record, utcnow())

    # -- reads ---------------------------------------------------------------------------

    def known_files(self) -> dict[str, KnownFile]:
        with self.store.read() as catalog:
            return catalog.known_files()

    def item(self, item_id: int) -> ItemRecord | None:
        with self.store.read() as catalog:
            row = catalog.item(item_id)
        return row

    def item_at(self, path: str) -> ItemRecord | None:
        with self.store.read() as catalog:
            row = catalog.item_at(path)
        return row

    def items(self) -> list[ItemRecord]:
        with self.store.read() as catalog:
            return catalog.items()

    def vectors_of(self, path: str) -> list[VectorRecord]:
        """The vectors of one file, in the order they were stored."""
        with self.store.read() as catalog:
            return catalog.vectors_of(path)

    def item_vectors(self, item_id: int) -> list[VectorRecord]:
        """One item's vectors with their time ranges and text lines (what "more like this" picks from)."""
        with self.store.read() as catalog:
            return catalog.item_vectors(item_id)

    def hits(self, vector_ids: list[int]) -> list[HitRow]:
        """`ranking.ROW_COLUMNS` rows for vector ids: what a search result is made of."""
        with self.store.read() as catalog:
            return catalog.hits(vector_ids)

    def copies(self, hashes: list[str]) -> dict[str, list[str]]:
        """The indexed paths of each content hash (`ranking`'s exact copies)."""
        with self.store.read() as catalog:
            return catalog.copies(hashes)

    def failures(self) -> list[tuple[str, str | None]]:
        with self.store.read() as catalog:
            return catalog.failures()

    # -- writes ----------------------------------------------------------------------------

    def touch(self, path: str, size: int, mtime_ns: int) -> None:
        """A file whose bytes did not change (same hash) gets its new size/mtime recorded."""
        with self._transaction() as writer:
            writer.touch(path_to_db(path), size, mtime_ns)

    def write(self, records: list[FileRecord]) -> None:
        """Store files (replacing any earlier row for the same path) in one transaction.

        The vectors' float16 bytes are appended to their kind's shard and fsynced first; the rows
        (items, texts, vectors pointing at shard rows) then go in with executemany and explicit
        ids, in one commit. A crash before the commit leaves only shard bytes nobody points at.
        """
        if not records:
            return
        self._check_writable()
        dim = self._dim()
        needed = sum(len(r.vectors) for r in records if r.vectors is not None) * dim * 2 + SQLITE_MARGIN
        with self._transaction(f"storing a batch of {len(records)} files", needed) as writer:
            removed, _ = writer.delete_paths([path_to_db(r.path) for r in records])  # takes the write lock
            first_item = writer.next_id("items")
            writer.insert_items(first_item, [_item_insert(r) for r in records], utcnow())
            texts, by_kind = _vector_rows(records, first_item, writer.next_id("texts"))
            writer.insert_texts(texts)
            added = self._append_vectors(writer, by_kind, dim)
            writer.bump(set(added) | set(removed))
        self._committed(added, removed)

    def _append_vectors(self, writer: CatalogWriter, by_kind: VectorRows, dim: int) -> Added:
        """Each kind's vectors into its shards (fsynced), then the rows that point at them."""
        added: Added = {}
        next_vector = writer.next_id("vectors")
        for kind, (kind_rows, arrays) in by_kind.items():
            vectors = np.concatenate(arrays, dtype=np.float32).reshape(len(kind_rows), dim)
            ids = np.arange(next_vector, next_vector + len(vectors), dtype=np.int64)
            next_vector += len(vectors)
            shards, slots = self.shards.append(writer, kind, vectors)
            writer.insert_vectors((vid, *row, kind, shard, slot) for vid, row, shard, slot in
                                  zip(ids.tolist(), kind_rows, shards.tolist(), slots.tolist(), strict=True))
            added[kind] = (vectors, ids)
        return added

    def remove(self, paths: list[str]) -> int:
        """Forget files (deleted from disk); returns how many items were removed."""
        if not paths:
            return 0
        with self._transaction() as writer:
            removed, items = writer.delete_paths([path_to_db(p) for p in paths])
            writer.bump(set(removed))
        self._committed({}, removed)
        return items

    def _committed(self, added: Added, removed: Removed) -> None:
        """After a commit: mirror it in the loaded indexes, compact shards it left sparse."""
        self.indexes.apply(added, {kind: [vid for vid, _ in pairs] for kind, pairs in removed.items()})
        self.shards.compact(set(removed))

    # -- indexes ---------------------------------------------------------------------------

    def index(self, kind: str) -> VectorIndex | None:
        """The index for a kind (its name), loaded from its file or rebuilt from the shards if stale."""
        return self.indexes.index(kind)

    def refresh(self) -> list[str]:
        """Forget loaded indexes another process has changed since (`IndexSet.refresh`)."""
        return self.indexes.refresh()

    def kinds(self) -> list[str]:
        """Media kinds that have an index (possibly empty)."""
        return self.indexes.kinds()

    @property
    def notes(self) -> list[str]:
        """One line per damaged part found since this library was opened, and what was done."""
        marked = [f"{damage.path}: {damage.reason}; {len(paths)} file(s) marked to index again"
                  + (f" (e.g. {paths[0]})" if paths else "") for damage, paths in self.shards.marked]
        return marked + self.indexes.notes

    def save_indexes(self) -> None:
        """Write every index whose file is behind the store; retrain where the size outgrew it."""
        self.indexes.save()

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        model = self.model()
        with self.store.read() as catalog:
            counts = catalog.counts()
            with_date_taken, with_place = catalog.metadata_counts()
            states = catalog.index_states()
            audio = catalog.audio_model()
        per_kind: dict[str, dict[str, int]] = {}
        per_status: dict[str, int] = {}
        for kind, status, n in counts.items:
            per_kind.setdefault(kind, {})[status] = n
            per_status[status] = per_status.get(status, 0) + n
        return {
            "library": str(self.root),
            "model": model.spec.name if model else None,
            "pretrained": model.spec.pretrained if model else None,
            "dim": model.dim if model else None,
            "audio_model": {"path": audio.path, "kind": audio.kind, "dim": audio.dim} if audio else None,
            "items": per_kind,
            "status": per_status,
            "texts": counts.texts,
            "with_date_taken": with_date_taken,  # items whose file gives its date taken (EXIF, container)
            "with_place": with_place,  # items whose file gives where it was taken (GPS)
            "indexes": {kind: {"factory": s.factory, "vectors": counts.vectors.get(kind, 0),
                               "up_to_date": s.built_generation == s.generation,
                               "trained_on": s.trained_on,
                               "built_at": s.built_at.isoformat() if s.built_at else None,
                               **self._footprint(kind, s.factory, counts.vectors.get(kind, 0))}
                        for kind, s in states.items()},
            "bytes_on_disk": sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()),
            "damaged": [f"{d.path}: {d.reason}" for _, _, d in self.shards.damage() if d.damaged],  # lengths only
            "read_only": self.readonly,
        }

    def _footprint(self, kind: str, factory: str, n: int) -> dict[str, Any]:
        """The index's RAM once warm and its file, and the kind's shards on disk (`jrsearch status`)."""
        from jrsearch.retrieval.index import footprint

        model = self.model()
        if not factory or model is None:
            return {}
        shards = self.root / VECTORS_DIR / kind
        shard_bytes = sum(p.stat().st_size for p in shards.glob(f"*{SHARD_SUFFIX}"))  # the rows, not their .sums
        return {**footprint(factory, n, model.dim, self.indexes.path(kind)).to_json(), "vector_bytes": shard_bytes}


Added = dict[str, tuple[np.ndarray, np.ndarray]]  # kind -> (vectors, their ids) of a commit
TextRows = list[tuple[int, int, int, str]]  # (text id, item id, line, text)
VectorRows = dict[str, tuple[list[tuple], list[np.ndarray]]]  # kind -> (rows without id/kind/slot, vectors)


def _item_insert(record: FileRecord) -> ItemInsert:
    fields = record.item_fields()
    return ItemInsert(path_to_db(record.path), str(record.kind), record.size, record.mtime_ns, record.content_hash,
                      json.dumps(fields) if fields else None, record.status.value, record.error,
                      record.failure.value if record.failure else None,
                      metadata_row(record.metadata))


def _vector_rows(records: list[FileRecord], first_item: int, next_text: int) -> tuple[TextRows, VectorRows]:
    """A batch's text rows and its vector rows by kind."""
    texts: TextRows = []
    by_kind: VectorRows = {}
    for item_id, r in enumerate(records, start=first_item):
        if r.vectors is None or not len(r.vectors):
            continue
        count = len(r.vectors)
        kind_rows, arrays = by_kind.setdefault(str(r.kind), ([], []))
        arrays.append(r.vectors)
        details = r.row_details()
        if details is None:  # the common case (one image, one vector), kept fast
            kind_rows += [(item_id, None, r.modality, None, None)] * count
            continue
        segments = details.segments or [(None, None)] * count
        modalities = details.modalities or [r.modality] * count
        text_ids: list[int | None] = [None] * count
        if details.texts:
            first = next_text + len(texts)
            texts += [(tid, item_id, line, text)
                      for tid, (line, text) in zip(range(first, first + count), details.texts, strict=True)]
            text_ids = list(range(first, first + count))
        kind_rows += [(item_id, text_ids[j], modalities[j], *segments[j]) for j in range(count)]
    return texts, by_kind
