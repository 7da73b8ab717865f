"""Every statement that changes a library's store, over one sqlite3 connection in one transaction.

`store.Store.transaction()` hands out a `CatalogWriter` and commits when the block ends (rolls
back on an exception). The first statement of a transaction that reads before it writes is
`lock()`, so the ids and shard tails it reads cannot race another writer. Rows go in with
executemany and explicit ids, the fast path for bulk indexing. Kept to the standard library, as
the read side (`catalog.py`) is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

import numpy as np

from jrsearch.retrieval.catalog import AudioModelRecord
from jrsearch.retrieval.media_metadata import MediaMetadata

ID_CHUNK = 10_000  # values per IN (...) list (SQLite allows 32,766)


class ItemInsert(NamedTuple):
    """One `items` row to store: the file's fields as stored (path as bytes, details as JSON)."""

    path: bytes
    kind: str
    size: int
    mtime_ns: int
    content_hash: str | None
    details: str | None
    status: str
    error: str | None
    failure: str | None
    metadata: tuple[Any, ...]  # `metadata_row`: the METADATA_COLUMNS values


METADATA_COLUMNS = ("taken_ts", "taken_at", "taken_source", "taken_naive", "latitude", "longitude", "camera_make",
                    "camera_model")


def metadata_row(metadata: MediaMetadata | None) -> tuple[Any, ...]:
    """The `items` values of METADATA_COLUMNS for what a file says of itself (None: all NULL)."""
    if metadata is None:
        return (None,) * len(METADATA_COLUMNS)
    taken = metadata.taken_at
    return (taken.timestamp() if taken else None, taken.isoformat() if taken else None, metadata.taken_source,
            int(metadata.taken_naive) if taken else None, metadata.latitude, metadata.longitude,
            metadata.camera_make, metadata.camera_model)


Removed = dict[str, list[tuple[int, int]]]  # kind -> [(vector id, shard)] of deleted vectors


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def format_stored_time(when: datetime) -> str:
    """A DATETIME as SQLAlchemy writes it on SQLite, so both read it back alike."""
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


class CatalogWriter:
    """The write statements; one instance per transaction."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def lock(self) -> None:
        """Take SQLite's write lock now (a write that changes nothing)."""
        self.con.execute("UPDATE index_state SET generation = generation WHERE 0")

    # -- the library ------------------------------------------------------------------------

    def adopt_model(self, schema_version: int, name: str, pretrained: str, dim: int, now: datetime) -> None:
        self.con.execute("INSERT INTO manifest (id, schema_version, model_name, pretrained, dim, created_at) "
                         "VALUES (1, ?, ?, ?, ?, ?)", (schema_version, name, pretrained, dim, format_stored_time(now)))

    def record_audio_model(self, record: AudioModelRecord, now: datetime) -> None:
        """The audio tower, or where the same checkpoint moved to."""
        self.con.execute("INSERT INTO audio_model (id, path, content_hash, kind, dim, adopted_at) "
                         "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET path = excluded.path",
                         (record.path, record.content_hash, record.kind, record.dim, format_stored_time(now)))

    def bump(self, kinds: Iterable[str]) -> None:
        """A new generation for each changed kind: its index file is behind until saved again."""
        self.con.executemany("INSERT INTO index_state (kind, factory, generation, built_generation, trained_on) "
                             "VALUES (?, '', 1, -1, 0) ON CONFLICT (kind) DO UPDATE SET generation = generation + 1",
                             [(kind,) for kind in kinds])

    def mark_built(self, kind: str, generation: int, factory: str, trained_on: int, now: datetime) -> bool:
        """Record that `kind`'s index file matches `generation`; False (and nothing changed) when
        another write has moved the kind on meanwhile, so its index stays stale."""
        cursor = self.con.execute("UPDATE index_state SET built_generation = ?, factory = ?, trained_on = ?, "
                                  "built_at = ? WHERE kind = ? AND generation = ?",
                                  (generation, factory, trained_on, format_stored_time(now), kind, generation))
        return cursor.rowcount > 0

    # -- files -------------------------------------------------------------------------------

    def touch(self, path: bytes, size: int, mtime_ns: int) -> None:
        self.con.execute("UPDATE items SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def delete_paths(self, paths: Sequence[bytes]) -> tuple[Removed, int]:
        """Delete items by path (their texts and vectors cascade): (the vectors removed, by kind;
        how many items were removed). Takes the write lock first."""
        self.lock()
        removed: Removed = {}
        items = 0
        for start in range(0, len(paths), ID_CHUNK):
            chunk = paths[start:start + ID_CHUNK]
            item_ids = [row[0] for row in self.con.execute(
                f"SELECT id FROM items WHERE path IN ({','.join('?' * len(chunk))})", chunk)]
            if not item_ids:
                continue
            marks = ",".join("?" * len(item_ids))
            for kind, vid, shard in self.con.execute(
                    f"SELECT kind, id, shard FROM vectors WHERE item_id IN ({marks})", item_ids):
                removed.setdefault(kind, []).append((vid, shard))
            self.con.execute(f"DELETE FROM items WHERE id IN ({marks})", item_ids)
            items += len(item_ids)
        self._count_dead(removed)
        return removed, items

    def _count_dead(self, removed: Removed) -> None:
        """Lower the live counts of the shards `removed` vectors were in."""
        for kind, pairs in removed.items():
            dead: dict[int, int] = {}
            for _, shard in pairs:
                dead[shard] = dead.get(shard, 0) + 1
            self.con.executemany("UPDATE vector_shards SET live = live - ? WHERE kind = ? AND shard = ?",
                                 [(n, kind, shard) for shard, n in dead.items()])

    def next_id(self, table: str) -> int:
        """The first free id of `items`, `texts` or `vectors` (the transaction holds the write lock)."""
        assert table in ("items", "texts", "vectors")
        return int(self.con.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()[0])

    def insert_items(self, first_id: int, rows: Sequence[ItemInsert], now: datetime) -> None:
        when = format_stored_time(now)
        self.con.executemany(
            f"INSERT INTO items (id, path, kind, size, mtime_ns, content_hash, details, status, error, failure, "
            f"indexed_at, {', '.join(METADATA_COLUMNS)}) VALUES ({', '.join('?' * (11 + len(METADATA_COLUMNS)))})",
            [(item_id, *row[:-1], when, *row.metadata) for item_id, row in enumerate(rows, start=first_id)])

    def insert_texts(self, rows: Sequence[tuple[int, int, int, str]]) -> None:
        """(id, item id, line, text) rows."""
        self.con.executemany("INSERT INTO texts (id, item_id, line, text) VALUES (?, ?, ?, ?)", rows)

    def insert_vectors(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """(id, item id, text id, modality, start_s, end_s, kind, shard, row) rows."""
        self.con.executemany("INSERT INTO vectors (id, item_id, text_id, modality, start_s, end_s, kind, shard, row) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    # -- vector shards (`retrieval/shards.py`) -----------------------------------------------

    def shard_tail(self, kind: str) -> tuple[int, int]:
        """(shard, committed rows) where the next vector of `kind` goes."""
        row = self.con.execute("SELECT shard, rows, dead FROM vector_shards WHERE kind = ? ORDER BY shard DESC "
                               "LIMIT 1", (kind,)).fetchone()
        if row is None:
            return 0, 0
        return (row[0] + 1, 0) if row[2] else (row[0], row[1])

    def count_shard_rows(self, kind: str, shards: np.ndarray) -> None:
        """Record rows appended to shards (committed with the rows that point at them)."""
        numbers, counts = np.unique(shards, return_counts=True)
        self.con.executemany(
            "INSERT INTO vector_shards (kind, shard, rows, live, dead) VALUES (?, ?, ?, ?, 0) ON CONFLICT (kind, "
            "shard) DO UPDATE SET rows = rows + excluded.rows, live = live + excluded.live",
            [(kind, int(s), int(c), int(c)) for s, c in zip(numbers, counts, strict=True)])

    def retire_shard(self, kind: str, shard: int) -> tuple[list[int], np.ndarray]:
        """Mark a shard dead (compaction) and return its live vectors: (ids, rows), in row order."""
        self.con.execute("UPDATE vector_shards SET dead = 1, live = 0 WHERE kind = ? AND shard = ?", (kind, shard))
        live = self.con.execute("SELECT id, row FROM vectors WHERE kind = ? AND shard = ? ORDER BY row",
                                (kind, shard)).fetchall()
        return [vid for vid, _ in live], np.array([row for _, row in live], dtype=np.int64)

    def mark_damaged(self, kind: str, shard: int, ranges: Sequence[tuple[int, int]], reason: str,
                     failure: str) -> tuple[Removed, list[bytes]]:
        """Files with a vector in `shard`'s row `ranges` ([first, end)) lose all their vectors and are
        recorded failed with `reason` and the code `failure`, their size, mtime and hash cleared, so the
        next `index` of their folder embeds them again: (the vectors removed; the files' paths)."""
        self.lock()
        where = " OR ".join("row >= ? AND row < ?" for _ in ranges)
        bounds = [value for pair in ranges for value in pair]
        item_ids = [row[0] for row in self.con.execute(
            f"SELECT DISTINCT item_id FROM vectors WHERE kind = ? AND shard = ? AND ({where})", (kind, shard, *bounds))]
        removed: Removed = {}
        paths: list[bytes] = []
        for start in range(0, len(item_ids), ID_CHUNK):
            chunk = item_ids[start:start + ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            for vkind, vid, vshard in self.con.execute(
                    f"SELECT kind, id, shard FROM vectors WHERE item_id IN ({marks})", chunk):
                removed.setdefault(vkind, []).append((vid, vshard))
            paths += [row[0] for row in self.con.execute(f"SELECT path FROM items WHERE id IN ({marks})", chunk)]
            self.con.execute(f"DELETE FROM vectors WHERE item_id IN ({marks})", chunk)
            self.con.execute(f"UPDATE items SET status = 'failed', error = ?, failure = ?, size = -1, mtime_ns = -1, "
                             f"content_hash = NULL WHERE id IN ({marks})", (reason, failure, *chunk))
        self._count_dead(removed)
        return removed, paths

    def shorten_shard(self, kind: str, shard: int, rows: int) -> None:
        """A shard cut short keeps `rows` rows (the vectors past them were marked damaged first)."""
        self.con.execute("UPDATE vector_shards SET rows = ? WHERE kind = ? AND shard = ? AND rows > ?",
                         (rows, kind, shard, rows))

    def move_vectors(self, ids: Sequence[int], shards: np.ndarray, rows: np.ndarray) -> None:
        self.con.executemany("UPDATE vectors SET shard = ?, row = ? WHERE id = ?",
                             zip(shards.tolist(), rows.tolist(), ids, strict=True))
