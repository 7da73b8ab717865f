"""A library on disk: the SQLite store, the vector shards, one FAISS index per media kind.

    LIBRARY/library.db            items, texts, where each vector lives, manifest, index state
    LIBRARY/vectors/KIND/*.f16    every vector as float16, append-only (`retrieval/vectors.py`)
    LIBRARY/index/KIND.faiss      KIND's vectors in the index type the store names

Shard bytes are written and fsynced first, then the rows that point at them are committed; index
files are written after, atomically, and the store records which generation each file matches.
An index file behind its store (a crash, a kill -9) is rebuilt from the shards on the next open,
so the two never disagree for long. This module is the one place that writes SQL; readers get
typed records from it (or, on the torch-free path, from `retrieval/catalog.py`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from jrsearch.retrieval import migrations
from jrsearch.retrieval.catalog import (
    Catalog,
    connect,
    count_shard_rows,
    is_locked,
    open_readable,
    shard_tail,
    sqlite_connection,
)
from jrsearch.retrieval.diskspace import SQLITE_MARGIN, no_space_as_error
from jrsearch.retrieval.errors import LibraryError, ModelMismatchError
from jrsearch.retrieval.index import DEFAULT_NPROBE, VectorIndex
from jrsearch.retrieval.paths import (
    DB_NAME,
    VECTORS_DIR,
    default_library_dir,
    index_path,
    path_from_db,
    path_to_db,
    slot_runs_path,
)
from jrsearch.retrieval.store import SCHEMA_VERSION, AudioModel, IndexState, Item, Manifest, Text, Vector, utcnow
from jrsearch.retrieval.types import ItemStatus, MediaKind, ModelSpec
from jrsearch.retrieval.vectors import SHARD_ROWS, SLOT_BATCH, ShardSet, ShardSource, SlotRuns

LOCK_NAME = "write.lock"
ID_CHUNK = 10_000  # values per IN (...) list (SQLite allows 32,766)
COMPACT_BELOW = 0.5  # a shard is rewritten once fewer than this share of its rows are live
COMPACT_MIN_DEAD = 1 << 16  # ... and, for the last, growing shard, at least this many are dead


@dataclass(kw_only=True)
class FileRecord:
    """What the indexer learned about one file, ready to be stored: the fields every kind has.

    Each kind's record below adds its own fields; a record of this base type stores a file with
    one plain vector row per vector (no text, no time range)."""

    path: str
    kind: str  # its kind's name (`MediaKind` for the shipped kinds)
    size: int
    mtime_ns: int
    content_hash: str | None
    status: ItemStatus
    error: str | None = None
    vectors: np.ndarray | None = None  # (n, dim) float32, one row per vector of this file
    modality: str = "image"  # the tower that made the vectors

    def item_columns(self) -> tuple[int | None, int | None, float | None]:
        """(width, height, duration_s) of the item row."""
        return None, None, None

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

    def item_columns(self) -> tuple[int | None, int | None, float | None]:
        return self.width, self.height, None


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

    def item_columns(self) -> tuple[int | None, int | None, float | None]:
        return None, None, self.duration_s

    def row_details(self) -> RowDetails | None:
        return RowDetails([], self.segments, self.modalities) if self.segments or self.modalities else None


@dataclass(kw_only=True)
class VideoRecord(SoundRecord):
    """Frames (modality "image") and soundtrack (modality "audio") of one video."""

    kind: str = MediaKind.VIDEO
    modality: str = "image"
    width: int | None = None
    height: int | None = None

    def item_columns(self) -> tuple[int | None, int | None, float | None]:
        return self.width, self.height, self.duration_s


@dataclass(frozen=True)
class KnownFile:
    id: int
    size: int
    mtime_ns: int
    content_hash: str | None
    status: ItemStatus


@dataclass(frozen=True)
class ItemRecord:
    """One stored file, as readers see it."""

    id: int
    path: str
    kind: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    duration_s: float | None
    status: ItemStatus
    error: str | None
    indexed_at: datetime


@dataclass(frozen=True)
class VectorRecord:
    id: int
    modality: str
    start_s: float | None
    end_s: float | None


@dataclass(frozen=True)
class AudioModelRecord:
    """The audio tower a library's sound vectors come from."""

    path: str
    content_hash: str
    kind: str
    dim: int


class Library:
    """Open with `Library.open(root)`; a writer holds `root/write.lock` via `writing()`.

    A library whose disk is full or read-only opens read-only (`readonly`): it answers queries,
    and a write raises a `LibraryError` that says so."""

    def __init__(self, root: Path, nprobe: int = DEFAULT_NPROBE) -> None:
        from filelock import FileLock

        self.root = root
        self.nprobe = nprobe
        self.rerank: int | None = None  # candidates re-scored on the exact vectors (None: the index's default)
        self._lock = FileLock(str(root / LOCK_NAME))
        self.readonly = False
        self.sessions = self._open_store()
        self._indexes: dict[str, VectorIndex] = {}
        self._rebuild: set[str] = set()
        self._shards: dict[str, ShardSet] = {}
        self._model: tuple[ModelSpec, int] | None = None  # fixed once written, so read once
        self._seen_generations: dict[str, int] = {}

    @classmethod
    def open(cls, root: Path | None = None, create: bool = False, nprobe: int = DEFAULT_NPROBE) -> Library:
        root = (root or default_library_dir()).expanduser()
        if not (root / DB_NAME).exists():
            if not create:
                raise LibraryError(f"no library at {root}; run `jrsearch index PATH` first or pass --library DIR")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LibraryError(f"cannot create library at {root}: {exc.strerror}; pass --library DIR") from None
        return cls(root, nprobe)

    def close(self) -> None:
        self.sessions.kw["bind"].dispose()
        for shards in self._shards.values():
            shards.close()

    # -- opening: one lock, then schema work ------------------------------------------------

    def _open_store(self) -> sessionmaker[Session]:
        """The SQLAlchemy sessions over this library's file, created or migrated under the write lock.

        A file that cannot be opened for writing (a full disk, a read-only mount) is opened
        read-only instead; one that needs schema work then cannot be used, and says why."""
        db = self.root / DB_NAME
        try:
            engine = create_engine("sqlite://", creator=lambda: connect(db), poolclass=QueuePool)
            version = self._version(engine)
        except (OperationalError, sqlite3.OperationalError) as exc:
            if is_locked(exc):
                raise self._locked_error() from None
            engine = self._open_readonly(db, exc)
            version = self._version(engine)
        if version > SCHEMA_VERSION:
            raise LibraryError(f"library {self.root} was written by a newer jrsearch (schema version {version}, this "
                               f"one reads up to {SCHEMA_VERSION}); upgrade jrsearch to use it")
        if version < SCHEMA_VERSION:
            if self.readonly:
                need = "cannot be created" if version == 0 else f"needs an upgrade to schema version {SCHEMA_VERSION}"
                raise LibraryError(f"library {self.root} {need}, and its disk cannot be written (full or read-only); "
                                   f"free space there and run again")
            with self._schema_lock():
                version = self._version(engine)  # another process may have done it meanwhile
                with self._disk_errors("creating the library" if version == 0 else "upgrading the library"):
                    if version == 0:
                        migrations.create(engine)
                    elif version < SCHEMA_VERSION:
                        migrations.upgrade(engine, self.root, version)
        return sessionmaker(engine, expire_on_commit=False)

    def _open_readonly(self, db: Path, cause: Exception) -> Engine:
        try:
            probe, immutable = open_readable(db)
            probe.close()
        except sqlite3.Error:
            raise LibraryError(f"cannot open library {self.root}: {getattr(cause, 'orig', cause)}; "
                               f"check the disk it is on") from None
        self.readonly = True
        return create_engine("sqlite://", creator=lambda: connect(db, readonly=True, immutable=immutable),
                             poolclass=QueuePool)

    @staticmethod
    def _version(engine) -> int:
        with closing(engine.raw_connection()) as raw:
            return migrations.current_version(sqlite_connection(raw))

    @contextmanager
    def _schema_lock(self) -> Iterator[None]:
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

        Taking it also clears what a crashed writer left: shard bytes past the last commit and
        shard files a finished compaction no longer needs."""
        from filelock import Timeout

        self._check_writable()
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise self._locked_error() from None
        try:
            self._recover()
            yield
        finally:
            self._lock.release()

    def _check_writable(self) -> None:
        if self.readonly:
            raise LibraryError(f"library {self.root} is open read-only (its disk is full or not writable); "
                               f"free space there and run the command again")

    def _disk_errors(self, doing: str = "writing to the library",
                     needed: int | None = None) -> AbstractContextManager[None]:
        """A full disk becomes one `DiskFullError` line naming the library; earlier commits stay."""
        return no_space_as_error(self.root, doing, needed)

    # -- the model ------------------------------------------------------------------------

    def model(self) -> tuple[ModelSpec, int] | None:
        if self._model is None:
            with self.catalog() as catalog:
                row = catalog.model()
            self._model = (ModelSpec(row[0], row[1]), row[2]) if row else None
        return self._model

    def check_model(self, spec: ModelSpec) -> None:
        """Refuse to mix models: vectors from two models do not share a space."""
        built = self.model()
        if built and built[0] != spec:
            raise ModelMismatchError(
                f"library {self.root} was built with {built[0].label()}, not {spec.label()}; "
                f"omit --model/--pretrained to use the library's model, or pass --library DIR for another library")

    def adopt_model(self, spec: ModelSpec, dim: int) -> None:
        self.check_model(spec)
        if self.model() is None:
            self._check_writable()
            with self._disk_errors(), self.sessions.begin() as session:
                session.add(Manifest(id=1, schema_version=SCHEMA_VERSION, model_name=spec.name,
                                     pretrained=spec.pretrained, dim=dim))

    def audio_model(self) -> AudioModelRecord | None:
        with self.sessions() as session:
            row = session.scalars(select(AudioModel)).first()
        return AudioModelRecord(row.path, row.content_hash, row.kind, row.dim) if row else None

    def record_audio_model(self, record: AudioModelRecord) -> None:
        """Remember the audio tower (or where the same checkpoint moved to)."""
        self._check_writable()
        with self._disk_errors(), self.sessions.begin() as session:
            row = session.get(AudioModel, 1)
            if row is None:
                session.add(AudioModel(id=1, path=record.path, content_hash=record.content_hash, kind=record.kind,
                                       dim=record.dim))
            else:
                row.path = record.path

    # -- reads ---------------------------------------------------------------------------

    @contextmanager
    def catalog(self) -> Iterator[Catalog]:
        """The shared read queries over a pooled connection of this library."""
        raw = self.sessions.kw["bind"].raw_connection()
        try:
            yield Catalog(sqlite_connection(raw))
        finally:
            raw.close()

    def known_files(self) -> dict[str, KnownFile]:
        with self.sessions() as session:
            rows = session.execute(select(Item.path, Item.id, Item.size, Item.mtime_ns, Item.content_hash, Item.status))
            return {path_from_db(r.path): KnownFile(r.id, r.size, r.mtime_ns, r.content_hash,
                                                         ItemStatus(r.status)) for r in rows}

    def item(self, item_id: int) -> ItemRecord | None:
        with self.sessions() as session:
            row = session.get(Item, item_id)
            return _item_record(row) if row else None

    def item_at(self, path: str) -> ItemRecord | None:
        with self.sessions() as session:
            row = session.scalars(select(Item).where(Item.path == path_to_db(path))).first()
            return _item_record(row) if row else None

    def items(self) -> list[ItemRecord]:
        with self.sessions() as session:
            return [_item_record(row) for row in session.scalars(select(Item).order_by(Item.id))]

    def vectors_of(self, path: str) -> list[VectorRecord]:
        """The vectors of one file, in the order they were stored."""
        with self.sessions() as session:
            rows = session.execute(select(Vector.id, Vector.modality, Vector.start_s, Vector.end_s).join(Item)
                                   .where(Item.path == path_to_db(path)).order_by(Vector.id)).all()
        return [VectorRecord(*row) for row in rows]

    def hits(self, vector_ids: list[int]) -> list[tuple]:
        """`ranking.ROW_COLUMNS` rows for vector ids: what a search result is made of."""
        with self.catalog() as catalog:
            return list(catalog.hits(vector_ids))

    def videos_to_revisit(self, failed_reason_suffix: str) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of indexed videos without sound vectors, and of videos that failed
        with an error ending in `failed_reason_suffix`."""
        from sqlalchemy import exists

        with self.sessions() as session:
            silent = (Item.status == ItemStatus.INDEXED.value) & ~exists().where(
                Vector.item_id == Item.id, Vector.modality == "audio")
            waiting = (Item.status == ItemStatus.FAILED.value) & Item.error.endswith(failed_reason_suffix)
            rows = session.execute(select(Item.path, Item.size, Item.mtime_ns).where(
                Item.kind == MediaKind.VIDEO.value, silent | waiting)).all()
        return [(path_from_db(path), size, mtime_ns) for path, size, mtime_ns in rows]

    def _footprint(self, kind: str, factory: str, n: int) -> dict:
        """The index's RAM once warm and its file, and the kind's shards on disk (`jrsearch status`)."""
        from jrsearch.retrieval.index import footprint

        model = self.model()
        if not factory or model is None:
            return {}
        shards = self.root / VECTORS_DIR / kind
        shard_bytes = sum(p.stat().st_size for p in shards.iterdir()) if shards.is_dir() else 0
        return {**footprint(factory, n, model[1], self.index_path(kind)).to_json(), "vector_bytes": shard_bytes}

    def failures(self) -> list[tuple[str, str | None]]:
        with self.sessions() as session:
            rows = session.execute(select(Item.path, Item.error).where(Item.status == ItemStatus.FAILED.value)
                                   .order_by(Item.path)).all()
        return [(path_from_db(path), error) for path, error in rows]

    # -- writes ----------------------------------------------------------------------------

    def touch(self, path: str, size: int, mtime_ns: int) -> None:
        """A file whose bytes did not change (same hash) gets its new size/mtime recorded."""
        self._check_writable()
        with self._disk_errors(), self.sessions.begin() as session:
            session.execute(update(Item).where(Item.path == path_to_db(path)).values(size=size, mtime_ns=mtime_ns))

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
        now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DATETIME form
        paths = [path_to_db(r.path) for r in records]
        with self._disk_errors(f"storing a batch of {len(records)} files", needed), \
                self.sessions.begin() as session:
            con = _dbapi(session)
            removed, _ = self._delete_paths(con, paths)  # also starts the write lock
            next_item = _next_id(con, "items")
            con.executemany(
                "INSERT INTO items (id, path, kind, size, mtime_ns, content_hash, width, height, duration_s, status, "
                "error, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(item_id, path, str(r.kind), r.size, r.mtime_ns, r.content_hash, *r.item_columns(),
                  r.status.value, r.error, now)
                 for item_id, path, r in zip(range(next_item, next_item + len(records)), paths, records,
                                                 strict=True)])
            texts: list[tuple] = []
            next_text = _next_id(con, "texts")
            by_kind: dict[str, tuple[list[tuple], list[np.ndarray]]] = {}
            for item_id, r in enumerate(records, start=next_item):
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
                    text_ids = list(range(next_text + len(texts), next_text + len(texts) + count))
                    texts += [(tid, item_id, line, text)
                              for tid, (line, text) in zip(text_ids, details.texts, strict=True)]
                kind_rows += [(item_id, text_ids[j], modalities[j], *segments[j]) for j in range(count)]
            con.executemany("INSERT INTO texts (id, item_id, line, text) VALUES (?, ?, ?, ?)", texts)
            added: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            next_vector = _next_id(con, "vectors")
            for kind, (kind_rows, arrays) in by_kind.items():
                vectors = np.concatenate(arrays, dtype=np.float32).reshape(len(kind_rows), dim)
                ids = np.arange(next_vector, next_vector + len(vectors), dtype=np.int64)
                next_vector += len(vectors)
                shards, slots = self._shard_set(kind).append(vectors, shard_tail(con, kind), SHARD_ROWS)
                con.executemany(
                    "INSERT INTO vectors (id, item_id, text_id, modality, start_s, end_s, kind, shard, row) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(vid, *row, kind, shard, slot)
                     for vid, row, shard, slot in zip(ids.tolist(), kind_rows, shards.tolist(),
                                                                  slots.tolist(), strict=True)])
                count_shard_rows(con, kind, shards)
                added[kind] = (vectors, ids)
            _bump(con, set(added) | set(removed))
        self._apply(added, {kind: [vid for vid, _ in pairs] for kind, pairs in removed.items()})
        self._compact(set(removed))

    def remove(self, paths: list[str]) -> int:
        """Forget files (deleted from disk); returns how many items were removed."""
        if not paths:
            return 0
        self._check_writable()
        with self._disk_errors(), self.sessions.begin() as session:
            con = _dbapi(session)
            removed, items = self._delete_paths(con, [path_to_db(p) for p in paths])
            _bump(con, set(removed))
        self._apply({}, {kind: [vid for vid, _ in pairs] for kind, pairs in removed.items()})
        self._compact(set(removed))
        return items

    def _delete_paths(self, con: sqlite3.Connection,
                      paths: list[bytes]) -> tuple[dict[str, list[tuple[int, int]]], int]:
        """Delete items by path (their texts and vectors cascade): ({kind: [(vector id, shard)]}
        removed, how many items were removed).

        Its first statement is a write, so the transaction holds SQLite's write lock from here on:
        the ids and shard tails read after it cannot race another writer."""
        con.execute("UPDATE index_state SET generation = generation WHERE 0")
        removed: dict[str, list[tuple[int, int]]] = {}
        items = 0
        for chunk in _chunks(paths, ID_CHUNK):
            item_ids = [row[0] for row in con.execute(
                f"SELECT id FROM items WHERE path IN ({','.join('?' * len(chunk))})", chunk)]
            if not item_ids:
                continue
            marks = ",".join("?" * len(item_ids))
            for kind, vid, shard in con.execute(f"SELECT kind, id, shard FROM vectors WHERE item_id IN ({marks})",
                                                item_ids):
                removed.setdefault(kind, []).append((vid, shard))
            con.execute(f"DELETE FROM items WHERE id IN ({marks})", item_ids)
            items += len(item_ids)
        for kind, pairs in removed.items():
            dead: dict[int, int] = {}
            for _, shard in pairs:
                dead[shard] = dead.get(shard, 0) + 1
            con.executemany("UPDATE vector_shards SET live = live - ? WHERE kind = ? AND shard = ?",
                            [(n, kind, shard) for shard, n in dead.items()])
        return removed, items

    def _apply(self, added: dict[str, tuple[np.ndarray, np.ndarray]], removed: dict[str, list[int]]) -> None:
        """Mirror a committed change in the loaded indexes; anything not loaded is rebuilt on save."""
        for kind, ids in removed.items():
            index = self._indexes.get(kind)
            if index is not None and not index.remove(np.array(ids)):
                self._rebuild.add(kind)
        for kind, (vectors, new_ids) in added.items():
            index = self._indexes.get(kind)
            if index is not None and kind not in self._rebuild:
                index.add(vectors, new_ids)

    # -- vector shards ---------------------------------------------------------------------

    def _dim(self) -> int:
        model = self.model()
        if model is None:
            raise LibraryError(f"library {self.root} has no model yet; adopt one before writing vectors")
        return model[1]

    def _shard_set(self, kind: str) -> ShardSet:
        shards = self._shards.get(kind)
        if shards is None:
            shards = self._shards[kind] = ShardSet(self.root / VECTORS_DIR / kind, self._dim())
        return shards

    def vectors(self, kind: str) -> ShardSource:
        """A kind's stored vectors as an index's `VectorSource` (streamed, memory-mapped)."""
        return ShardSource(self.catalog, self._shard_set(kind), kind, self.runs_path(kind))

    def _recover(self) -> None:
        """Truncate shard bytes past the last commit; unlink shards a compaction left dead."""
        with self.catalog() as catalog:
            rows = catalog.con.execute("SELECT kind, shard, rows, dead FROM vector_shards").fetchall()
        if self.model() is None:
            return
        committed: dict[str, dict[int, int]] = {}
        for kind, shard, count, dead in rows:
            if not dead:
                committed.setdefault(kind, {})[shard] = count
        folder = self.root / VECTORS_DIR
        kinds = set(committed) | ({p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set())
        for kind in kinds:
            self._shard_set(kind).truncate(committed.get(kind, {}))

    def _compact(self, kinds: set[str]) -> None:
        """Rewrite shards of `kinds` that are mostly dead: their live rows move to the tail (a new
        shard when the tail itself is compacted). A shard that is not full yet waits until
        COMPACT_MIN_DEAD of its rows are dead, so small libraries do not rewrite on every delete."""
        for kind in kinds:
            with self.catalog() as catalog:
                sparse = catalog.con.execute(
                    "SELECT shard FROM vector_shards WHERE kind = ? AND NOT dead AND live < rows * ? "
                    "AND (rows >= ? OR rows - live >= ?) ORDER BY shard",
                    (kind, COMPACT_BELOW, SHARD_ROWS, COMPACT_MIN_DEAD)).fetchall()
            for (shard,) in sparse:
                self._compact_shard(kind, shard)

    def _compact_shard(self, kind: str, shard: int) -> None:
        shards = self._shard_set(kind)
        with self._disk_errors(), self.sessions.begin() as session:
            con = _dbapi(session)
            con.execute("UPDATE vector_shards SET dead = 1 WHERE kind = ? AND shard = ?", (kind, shard))
            tail = shard_tail(con, kind)  # after the mark: the last shard compacts into a new one
            live = con.execute("SELECT id, row FROM vectors WHERE kind = ? AND shard = ? ORDER BY row",
                               (kind, shard)).fetchall()
            ids = [vid for vid, _ in live]
            old_rows = np.array([row for _, row in live], dtype=np.int64)
            moved = shards.read(np.full(len(old_rows), shard), old_rows)
            new_shards, new_rows = shards.append(moved, tail, SHARD_ROWS)
            con.executemany("UPDATE vectors SET shard = ?, row = ? WHERE id = ?",
                            zip(new_shards.tolist(), new_rows.tolist(), ids, strict=True))
            con.execute("UPDATE vector_shards SET live = 0 WHERE kind = ? AND shard = ?", (kind, shard))
            count_shard_rows(con, kind, new_shards)
        shards.unlink(shard)

    # -- indexes ---------------------------------------------------------------------------

    def index_path(self, kind: str) -> Path:
        return index_path(self.root, kind)

    def runs_path(self, kind: str) -> Path:
        return slot_runs_path(self.root, kind)

    def index(self, kind: str) -> VectorIndex | None:
        """The index for a kind (its name), loaded from its file or rebuilt from the shards if stale."""
        kind = str(kind)
        if kind in self._indexes:
            return self._indexes[kind]
        with self.catalog() as catalog:
            state = catalog.index_state(kind)
        if state is None:
            return None
        path = self.index_path(kind)
        if state.built_generation == state.generation and state.factory and path.exists():
            index = VectorIndex.load(path, state.factory, self.nprobe, trained_on=state.trained_on,
                                     source=self.vectors(kind))
        else:
            index = self._build(kind)
        index.rerank = self.rerank
        self._indexes[kind] = index
        return index

    def refresh(self) -> list[str]:
        """Forget loaded indexes that another process has changed since; returns their kinds.

        A long-running reader (`jrsearch serve`) calls this per request: one small SELECT. A
        dropped index is loaded again, at the last committed state, on its next use.
        """
        with self.catalog() as catalog:
            current = dict(catalog.con.execute("SELECT kind, generation FROM index_state").fetchall())
        seen = self._seen_generations
        dropped = [kind for kind in list(self._indexes) if seen.get(kind) != current.get(kind)]
        for kind in dropped:
            self._indexes.pop(kind, None)
        seen.clear()
        seen.update(current)  # an index loaded after this read is at least this new
        return dropped

    def kinds(self) -> list[str]:
        """Media kinds that have an index (possibly empty)."""
        with self.catalog() as catalog:
            return [kind for (kind,) in catalog.con.execute("SELECT kind FROM index_state ORDER BY kind")]

    def load_indexes(self) -> None:
        """Load every existing index so that writes can be mirrored into them incrementally."""
        for kind in self.kinds():
            self.index(kind)

    def stored_vectors(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """Every vector of a kind, all in RAM: (ids, (n, dim) float32). For tests and small checks;
        indexes stream through `vectors(kind)` instead."""
        parts = list(self.vectors(kind).batches(1 << 16))
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self._dim()), dtype=np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def retrain(self, kind: str) -> None:
        """Have the next `save_indexes` build `kind`'s index from scratch (train, then add)."""
        self._rebuild.add(str(kind))

    def _build(self, kind: str) -> VectorIndex:
        self._rebuild.discard(kind)
        return VectorIndex.build_from(self.vectors(kind), nprobe=self.nprobe)

    def save_indexes(self) -> None:
        """Write every index whose file is behind the store; retrain where the size outgrew it."""
        with self.catalog() as catalog:
            states = {kind: (generation, built) for kind, generation, built in catalog.con.execute(
                "SELECT kind, generation, built_generation FROM index_state").fetchall()}
        for kind, (generation, built) in states.items():
            if generation == built and kind not in self._rebuild:
                self._save_slot_runs(kind, generation, only_if_missing=True)  # libraries indexed before them
                continue
            self._check_writable()
            index = self._indexes.get(kind)
            if index is None or kind in self._rebuild or index.outgrown(index.ntotal):
                index = self._indexes[kind] = self._build(kind)
            index.save(self.index_path(kind))  # a full disk here: the caller knows the size to ask for
            self._save_slot_runs(kind, generation)
            with self.sessions.begin() as session:
                state = session.get(IndexState, kind)
                if state is None or state.generation != generation:  # another write landed meanwhile: keep it stale
                    continue
                state.built_generation = generation
                state.factory = index.factory
                state.trained_on = index.trained_on
                state.built_at = utcnow()

    def _save_slot_runs(self, kind: str, generation: int, only_if_missing: bool = False) -> None:
        """Save where the kind's vectors live at `generation` (`vectors.SlotRuns`), for re-ranking."""
        path = self.runs_path(kind)
        if self.readonly:
            return
        if only_if_missing:
            saved = SlotRuns.load(path)
            if saved is not None and saved.generation == generation:
                return
        with self.catalog() as catalog:
            runs = SlotRuns.scan(catalog.iter_slots(kind, SLOT_BATCH), generation)
        with self._disk_errors("saving where the vectors live"):
            runs.save(path)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict:
        spec_dim = self.model()
        with self.sessions() as session:
            counts = session.execute(select(Item.kind, Item.status, func.count())
                                     .group_by(Item.kind, Item.status)).all()
            vectors = dict(session.execute(select(Vector.kind, func.count()).group_by(Vector.kind)).all())
            texts = session.scalar(select(func.count()).select_from(Text))
            states = session.scalars(select(IndexState)).all()
        audio = self.audio_model()
        per_kind: dict[str, dict[str, int]] = {}
        per_status: dict[str, int] = {}
        for kind, status, n in counts:
            per_kind.setdefault(kind, {})[status] = n
            per_status[status] = per_status.get(status, 0) + n
        return {
            "library": str(self.root),
            "model": spec_dim[0].name if spec_dim else None,
            "pretrained": spec_dim[0].pretrained if spec_dim else None,
            "dim": spec_dim[1] if spec_dim else None,
            "audio_model": {"path": audio.path, "kind": audio.kind, "dim": audio.dim} if audio else None,
            "items": per_kind,
            "status": per_status,
            "texts": texts,
            "indexes": {s.kind: {"factory": s.factory, "vectors": vectors.get(s.kind, 0),
                                 "up_to_date": s.built_generation == s.generation,
                                 "trained_on": s.trained_on,
                                 "built_at": s.built_at.isoformat() if s.built_at else None,
                                 **self._footprint(s.kind, s.factory, vectors.get(s.kind, 0))} for s in states},
            "bytes_on_disk": sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()),
            "read_only": self.readonly,
        }


def _item_record(row: Item) -> ItemRecord:
    return ItemRecord(row.id, path_from_db(row.path), row.kind, row.size, row.mtime_ns, row.content_hash, row.width,
                      row.height, row.duration_s, ItemStatus(row.status), row.error, row.indexed_at)


def _dbapi(session: Session) -> sqlite3.Connection:
    """The sqlite3 connection under a session's transaction, for executemany at full speed."""
    return sqlite_connection(session.connection().connection)


def _next_id(con: sqlite3.Connection, table: str) -> int:
    return int(con.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()[0])


def _bump(con: sqlite3.Connection, kinds: set[str]) -> None:
    """A new generation for each changed kind: its index file is behind until saved again."""
    con.executemany("INSERT INTO index_state (kind, factory, generation, built_generation, trained_on) "
                    "VALUES (?, '', 1, -1, 0) ON CONFLICT (kind) DO UPDATE SET generation = generation + 1",
                    [(kind,) for kind in kinds])


def _chunks(values: list, size: int):
    for start in range(0, len(values), size):
        yield values[start:start + size]
