"""Connections to a library's SQLite file and every read query: the catalog's read side.

Kept to the standard library (sqlite3): the cold query path (`quick_search.py`) reads through it
without importing SQLAlchemy, and `Library` pools the same connections (`store.Store`), so a
query is written once for both. The statements that write are in `catalog_writer.py`, those of
the schema steps in `catalog_steps.py`; the schema itself is `store.py`'s table metadata.

A library must stay readable when its disk is full or read-only: `connect` never writes to a
reader's connection (it sets WAL only where it is not set yet), and `open_readable` falls back to
a read-only, then an immutable connection, when a normal one cannot be opened.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jrsearch.retrieval.errors import FailureCode, LibraryError
from jrsearch.retrieval.paths import path_from_db, path_to_db
from jrsearch.retrieval.types import ItemStatus

SCHEMA_VERSION = 5  # 1: float32 blobs in SQLite, text paths; 2: float16 shards, byte paths;
#                    3: per-kind item fields as data (items.details), the failure code in a column;
#                    4: date taken, place and camera as item columns; 5: an index on content hashes
WAL_SUFFIX = "-wal"

HITS_SQL = """
SELECT v.id, v.item_id, v.text_id, v.start_s, v.end_s, i.path, i.kind, t.text, t.line,
       i.taken_at, i.latitude, i.longitude, i.camera_make, i.camera_model, i.taken_source, i.content_hash
FROM vectors v JOIN items i ON v.item_id = i.id LEFT JOIN texts t ON v.text_id = t.id
WHERE v.id IN ({})"""


def connect(db: Path, readonly: bool = False, immutable: bool = False, timeout: float = 30) -> sqlite3.Connection:
    """A connection to `db`; a writer's gets WAL (once per file), foreign keys and NORMAL sync."""
    if readonly:
        flags = "mode=ro&immutable=1" if immutable else "mode=ro"
        con = sqlite3.connect(f"{db.resolve().as_uri()}?{flags}", uri=True, timeout=timeout, check_same_thread=False)
        con.execute("PRAGMA query_only=ON")
        return con
    con = sqlite3.connect(db, timeout=timeout, check_same_thread=False)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA cache_size=-65536")  # 64 MiB: the path index of a 10M-file library stays warm
    except sqlite3.Error:
        con.close()
        raise
    return con


def open_readable(db: Path, timeout: float = 30) -> tuple[sqlite3.Connection, bool]:
    """(connection, immutable) for reading `db` when writing to it may be impossible.

    Read-only first; where SQLite cannot even create the WAL index beside the file (a full disk,
    a read-only mount) and no WAL holds unmerged commits, the file is opened immutable, which
    reads exactly what the last writer left."""
    try:
        con = connect(db, readonly=True, timeout=timeout)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return con, False
    except sqlite3.OperationalError:
        wal = Path(f"{db}{WAL_SUFFIX}")
        if wal.exists() and wal.stat().st_size > 0:
            raise
    con = connect(db, readonly=True, immutable=True, timeout=timeout)
    con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return con, True


def sqlite_connection(raw: Any) -> sqlite3.Connection:
    """The sqlite3 connection inside a SQLAlchemy pooled connection."""
    con = raw.driver_connection
    assert isinstance(con, sqlite3.Connection)
    return con


def schema_version(con: sqlite3.Connection) -> int:
    """The library's schema version: PRAGMA user_version, 1 for the unversioned first schema,
    0 for a new, empty file."""
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version:
        return int(version)
    has_items = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone()
    return 1 if has_items else 0


def integrity_problems(db: Path, quick: bool = False) -> list[str]:
    """What SQLite's `PRAGMA integrity_check` (or `quick_check`) finds wrong in `db`; [] when sound."""
    try:
        con = connect(db, readonly=True)
        try:
            rows = con.execute(f"PRAGMA {'quick_check' if quick else 'integrity_check'}").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    found = [str(row[0]) for row in rows]
    return [] if found == ["ok"] else found


def is_damaged(exc: BaseException) -> bool:
    """Whether `exc` (sqlite3's, or SQLAlchemy's around it) says the file is damaged: SQLITE_CORRUPT
    ("database disk image is malformed") or SQLITE_NOTADB ("file is not a database")."""
    orig = getattr(exc, "orig", exc)
    return type(orig) is sqlite3.DatabaseError


def damaged_error(db: Path, exc: BaseException) -> LibraryError:
    """The one line a damaged library.db gives."""
    return LibraryError(f"{db} is damaged ({getattr(exc, 'orig', exc)}); run `jrsearch check` on the library "
                        f"to see what can be repaired")


def is_locked(exc: BaseException) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class IndexStateRow(NamedTuple):
    factory: str
    generation: int
    built_generation: int
    trained_on: int
    built_at: datetime | None = None

    @property
    def current(self) -> bool:
        """Whether the saved index file matches the store (as far as the store can tell)."""
        return self.built_generation == self.generation and bool(self.factory)


class HitRow(NamedTuple):
    """What a search result is made of (`ranking.ROW_COLUMNS`, in that order)."""

    vector_id: int
    item_id: int
    text_id: int | None
    start_s: float | None
    end_s: float | None
    path: str
    kind: str
    text: str | None
    line: int | None
    taken_at: str | None = None  # ISO 8601 with its offset
    latitude: float | None = None
    longitude: float | None = None
    camera: str | None = None  # `camera_name(make, model)`
    taken_source: str | None = None  # where taken_at came from: "exif", "container", "mtime" (the file's)
    content_hash: str | None = None  # the file's (`ranking` shows exact copies as one result)


def camera_name(make: str | None, model: str | None) -> str | None:
    """"make model" as results show it and camera filters match it; a model that already starts
    with its make ("Canon" + "Canon EOS 5D") is not given the make twice."""
    make, model = (make or "").strip(), (model or "").strip()
    if make and model.lower().startswith(make.lower()):
        return model
    return " ".join(part for part in (make, model) if part) or None


class FilterRows(NamedTuple):
    """A kind's vectors with what filters read of their items (`filter_columns.build_columns`)."""

    ids: np.ndarray  # vector ids, ascending
    paths: list[bytes]  # each vector's item path, as stored
    taken: np.ndarray  # POSIX seconds, NaN where unknown
    lat: np.ndarray  # NaN where unknown
    lon: np.ndarray
    cameras: list[str | None]  # `camera_name` per vector


class ModelRow(NamedTuple):
    name: str
    pretrained: str
    dim: int


@dataclass(frozen=True)
class ItemRecord:
    """One stored file, as readers see it. `details` holds its kind's own fields; the shipped
    kinds' (`width`, `height`, `duration_s`) read as attributes too, None where not set."""

    id: int
    path: str
    kind: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: ItemStatus
    error: str | None
    indexed_at: datetime
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)  # the kind's own fields
    failure: FailureCode | None = None

    @property
    def width(self) -> int | None:
        return self.details.get("width")

    @property
    def height(self) -> int | None:
        return self.details.get("height")

    @property
    def duration_s(self) -> float | None:
        return self.details.get("duration_s")


@dataclass(frozen=True)
class KnownFile:
    id: int
    size: int
    mtime_ns: int
    content_hash: str | None
    status: ItemStatus


@dataclass(frozen=True)
class VectorRecord:
    id: int
    modality: str
    start_s: float | None
    end_s: float | None
    line: int | None = None  # a text corpus's line (`item_vectors`)


@dataclass(frozen=True)
class AudioModelRecord:
    """The audio tower a library's sound vectors come from."""

    path: str
    content_hash: str
    kind: str
    dim: int


class StoredCounts(NamedTuple):
    """What `jrsearch status` counts: items per (kind, status), vectors per kind, texts."""

    items: list[tuple[str, str, int]]
    vectors: dict[str, int]
    texts: int


ITEM_COLUMNS = "id, path, kind, size, mtime_ns, content_hash, details, status, error, failure, indexed_at"


def item_row(row: Sequence[Any]) -> ItemRecord:
    return ItemRecord(row[0], path_from_db(row[1]), row[2], row[3], row[4], row[5], ItemStatus(row[7]), row[8],
                      parse_stored_time(row[10]), json.loads(row[6]) if row[6] else {},
                      FailureCode(row[9]) if row[9] else None)


def parse_stored_time(value: str | datetime | None) -> datetime:
    """A DATETIME column as written (SQLAlchemy's SQLite form, "YYYY-MM-DD HH:MM:SS.ffffff")."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value) if value else datetime.min


class Catalog:
    """Typed reads over one open connection (the cold path's own, or one of the library's pool)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    # -- the library ------------------------------------------------------------------------

    def model(self) -> ModelRow | None:
        """(name, pretrained, dim) of the library's image model, or None before the first index run."""
        row = self.con.execute("SELECT model_name, pretrained, dim FROM manifest").fetchone()
        return ModelRow(row[0], row[1], int(row[2])) if row else None

    def audio_model(self) -> AudioModelRecord | None:
        row = self.con.execute("SELECT path, content_hash, kind, dim FROM audio_model ORDER BY id").fetchone()
        return AudioModelRecord(*row) if row else None

    def index_state(self, kind: str) -> IndexStateRow | None:
        return self.index_states(kind).get(kind)

    def index_states(self, kind: str | None = None) -> dict[str, IndexStateRow]:
        """Each kind's index state (every kind's, or the one asked for), by kind name in order."""
        where, args = ("WHERE kind = ?", (kind,)) if kind is not None else ("", ())
        rows = self.con.execute(f"SELECT kind, factory, generation, built_generation, trained_on, built_at "
                                f"FROM index_state {where} ORDER BY kind", args).fetchall()
        return {kind: IndexStateRow(factory, generation, built, trained_on, parse_stored_time(at) if at else None)
                for kind, factory, generation, built, trained_on, at in rows}

    def counts(self) -> StoredCounts:
        items = self.con.execute("SELECT kind, status, count(*) FROM items GROUP BY kind, status").fetchall()
        vectors = dict(self.con.execute("SELECT kind, count(*) FROM vectors GROUP BY kind").fetchall())
        texts = int(self.con.execute("SELECT count(*) FROM texts").fetchone()[0])
        return StoredCounts(items, vectors, texts)

    # -- files ---------------------------------------------------------------------------------

    def known_files(self) -> dict[str, KnownFile]:
        rows = self.con.execute("SELECT path, id, size, mtime_ns, content_hash, status FROM items")
        return {path_from_db(r[0]): KnownFile(r[1], r[2], r[3], r[4], ItemStatus(r[5])) for r in rows}

    def item(self, item_id: int) -> ItemRecord | None:
        row = self.con.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return item_row(row) if row else None

    def item_at(self, path: str) -> ItemRecord | None:
        row = self.con.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE path = ?", (path_to_db(path),)).fetchone()
        return item_row(row) if row else None

    def items(self) -> list[ItemRecord]:
        return [item_row(row) for row in self.con.execute(f"SELECT {ITEM_COLUMNS} FROM items ORDER BY id")]

    def vectors_of(self, path: str) -> list[VectorRecord]:
        """The vectors of one file, in the order they were stored."""
        rows = self.con.execute("SELECT v.id, v.modality, v.start_s, v.end_s FROM vectors v JOIN items i "
                                "ON v.item_id = i.id WHERE i.path = ? ORDER BY v.id", (path_to_db(path),))
        return [VectorRecord(*row) for row in rows]

    def item_vectors(self, item_id: int) -> list[VectorRecord]:
        """The live vectors of one item, with their time ranges and text lines, in stored order."""
        rows = self.con.execute("SELECT v.id, v.modality, v.start_s, v.end_s, t.line FROM vectors v "
                                "LEFT JOIN texts t ON v.text_id = t.id WHERE v.item_id = ? ORDER BY v.id", (item_id,))
        return [VectorRecord(*row) for row in rows]

    def failures(self) -> list[tuple[str, str | None]]:
        rows = self.con.execute("SELECT path, error FROM items WHERE status = ? ORDER BY path",
                                (ItemStatus.FAILED.value,)).fetchall()
        return [(path_from_db(path), error) for path, error in rows]

    def to_revisit(self, kind: str, failure: str, missing_modality: str) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of `kind`'s files indexed without a `missing_modality` vector, and
        of those that failed with the code `failure` (`items.failure`)."""
        rows = self.con.execute(
            "SELECT path, size, mtime_ns FROM items i WHERE kind = ? AND ((status = ? AND NOT EXISTS "
            "(SELECT 1 FROM vectors v WHERE v.item_id = i.id AND v.modality = ?)) OR (status = ? AND failure = ?))",
            (kind, ItemStatus.INDEXED.value, missing_modality, ItemStatus.FAILED.value, failure)).fetchall()
        return [(path_from_db(path), size, mtime_ns) for path, size, mtime_ns in rows]

    def hits(self, vector_ids: Sequence[int]) -> list[HitRow]:
        """`ranking.ROW_COLUMNS` rows for vector ids (any order; deleted ids are absent)."""
        if not vector_ids:
            return []
        rows = self.con.execute(HITS_SQL.format(",".join("?" * len(vector_ids))), list(vector_ids)).fetchall()
        return [HitRow(vid, item_id, text_id, start_s, end_s, path_from_db(path), kind, text, line, taken_at,
                       lat, lon, camera_name(make, model), taken_source, content_hash)
                for vid, item_id, text_id, start_s, end_s, path, kind, text, line, taken_at, lat, lon, make, model,
                taken_source, content_hash in rows]

    def copies(self, hashes: Sequence[str]) -> dict[str, list[str]]:
        """The paths of the indexed files with each content hash, in path order (hashes no file has: absent)."""
        found: dict[str, list[str]] = {}
        for start in range(0, len(hashes), ID_CHUNK):
            chunk = list(hashes[start:start + ID_CHUNK])
            rows = self.con.execute(f"SELECT content_hash, path FROM items WHERE content_hash IN "
                                    f"({','.join('?' * len(chunk))}) AND status = ? ORDER BY path",
                                    (*chunk, ItemStatus.INDEXED.value)).fetchall()
            for content_hash, path in rows:
                found.setdefault(content_hash, []).append(path_from_db(path))
        return found

    def filter_rows(self, kind: str) -> FilterRows:
        """Every live vector of `kind` with its item's path, date taken, place and camera, in id order."""
        rows = self.con.execute("SELECT v.id, i.path, i.taken_ts, i.latitude, i.longitude, i.camera_make, "
                                "i.camera_model FROM vectors v JOIN items i ON v.item_id = i.id WHERE v.kind = ? "
                                "ORDER BY v.id", (kind,)).fetchall()

        def floats(column: int) -> np.ndarray:
            return np.array([np.nan if r[column] is None else r[column] for r in rows], dtype=np.float64)

        return FilterRows(np.array([r[0] for r in rows], dtype=np.int64), [bytes(r[1]) for r in rows], floats(2),
                          floats(3), floats(4), [camera_name(r[5], r[6]) for r in rows])

    def metadata_counts(self) -> tuple[int, int]:
        """(items with a date taken from the file itself, items with a place)."""
        row = self.con.execute("SELECT count(*) FILTER (WHERE taken_source IN ('exif', 'container')), "
                               "count(*) FILTER (WHERE latitude IS NOT NULL) FROM items").fetchone()
        return int(row[0]), int(row[1])

    # -- where vectors live (`retrieval/vectors.py`, `retrieval/shards.py`) --------------------

    def live_vectors(self, kind: str) -> int:
        row = self.con.execute("SELECT count(*) FROM vectors WHERE kind = ?", (kind,)).fetchone()
        return int(row[0])

    def vector_slots(self, kind: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids found, their shards, their rows) for the live vectors of `kind` among `ids`."""
        found: list[tuple[int, int, int]] = []
        values = [int(v) for v in ids]
        for start in range(0, len(values), ID_CHUNK):
            chunk = values[start:start + ID_CHUNK]
            found += self.con.execute(
                f"SELECT id, shard, row FROM vectors WHERE id IN ({','.join('?' * len(chunk))}) AND kind = ? "
                f"AND shard IS NOT NULL", (*chunk, kind)).fetchall()
        table = np.array(found, dtype=np.int64).reshape(-1, 3)
        return table[:, 0], table[:, 1], table[:, 2]

    def iter_slots(self, kind: str, size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(ids, shards, rows) of every live vector of `kind` in id order, `size` at a time."""
        cursor = self.con.execute("SELECT id, shard, row FROM vectors WHERE kind = ? ORDER BY id", (kind,))
        while True:
            rows = cursor.fetchmany(size)
            if not rows:
                return
            table = np.array(rows, dtype=np.int64)
            yield table[:, 0], table[:, 1], table[:, 2]

    def shards(self) -> list[tuple[str, int, int, bool]]:
        """(kind, shard, committed rows, dead) of every shard the store knows."""
        return [(kind, shard, rows, bool(dead)) for kind, shard, rows, dead in
                self.con.execute("SELECT kind, shard, rows, dead FROM vector_shards").fetchall()]

    def sparse_shards(self, kind: str, below: float, full_rows: int, min_dead: int) -> list[int]:
        """`kind`'s live shards with under `below` of their rows live: full ones, or any with at
        least `min_dead` dead rows."""
        rows = self.con.execute("SELECT shard FROM vector_shards WHERE kind = ? AND NOT dead AND live < rows * ? "
                                "AND (rows >= ? OR rows - live >= ?) ORDER BY shard",
                                (kind, below, full_rows, min_dead)).fetchall()
        return [shard for (shard,) in rows]


ID_CHUNK = 900  # ids per IN (...) list, under SQLite's bound-parameter limit
