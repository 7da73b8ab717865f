"""The SQL of each schema step (`migrations.py` runs them, in order, under the write lock).

Each step's statements are frozen with the versions they go between: they name the columns of
those versions, not the current schema (`store.py`), except where a step creates a table the
current schema still has unchanged.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

V2_SLOTS = "migration_v2_slots"  # vector id -> (shard, row) while 1 -> 2 runs
V2_NEEDS_AUDIO_TOWER_MARK = " (and no audio tower to index its sound)"  # how version 2 marked the code
V3_FIELDS = ("width", "height", "duration_s")  # version 2's kind-specific item columns


@contextmanager
def one_transaction(con: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT around DDL and all (sqlite3 would not open one before DDL)."""
    level = con.isolation_level
    con.isolation_level = None
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.isolation_level = level


def set_version(con: sqlite3.Connection, version: int) -> None:
    con.execute("UPDATE manifest SET schema_version = ?", (version,))
    con.execute(f"PRAGMA user_version = {int(version)}")


# -- 1 -> 2 ----------------------------------------------------------------------------------

def v2_prepare(con: sqlite3.Connection) -> int | None:
    """Make the table of moved vectors (the version-1 tables stay untouched); the model's dim,
    None when the library has no model (and so no vectors)."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {V2_SLOTS} (id INTEGER PRIMARY KEY, shard INTEGER NOT NULL, "
                f"row INTEGER NOT NULL)")
    con.commit()
    manifest = con.execute("SELECT dim FROM manifest").fetchone()
    return int(manifest[0]) if manifest else None


def v2_blobs_to_move(con: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, str, bytes]]:
    """(id, kind, float32 blob) of the next vectors not moved yet, in id order."""
    return con.execute(f"SELECT v.id, v.kind, v.embedding FROM vectors v LEFT JOIN {V2_SLOTS} s ON s.id = v.id "
                       f"WHERE v.id > ? AND s.id IS NULL ORDER BY v.id LIMIT ?", (after, limit)).fetchall()


def v2_lock(con: sqlite3.Connection) -> None:
    con.execute(f"DELETE FROM {V2_SLOTS} WHERE 0")  # take the write lock before reading the shard tails


def v2_record_moved(con: sqlite3.Connection, ids: list[int], shards: list[int], rows: list[int]) -> None:
    con.executemany(f"INSERT INTO {V2_SLOTS} (id, shard, row) VALUES (?, ?, ?)", zip(ids, shards, rows, strict=True))


def v2_finish(con: sqlite3.Connection, create_vectors: list[str]) -> None:
    """In the caller's one transaction: the new vectors table (`create_vectors`: its DDL) from the
    old one's metadata and the slots, byte paths, live counts, only the item indexes something
    looks up, version 2."""
    con.execute("UPDATE items SET path = CAST(path AS BLOB) WHERE typeof(path) = 'text'")
    for index in ("ix_items_kind", "ix_items_status", "ix_items_content_hash", "ix_vectors_kind_id",
                  "ix_vectors_item_id"):
        con.execute(f"DROP INDEX IF EXISTS {index}")
    con.execute("CREATE INDEX IF NOT EXISTS ix_items_failed ON items (id) WHERE status = 'failed'")
    con.execute("ALTER TABLE vectors RENAME TO vectors_v1")
    for statement in create_vectors:
        con.execute(statement)
    con.execute(f"INSERT INTO vectors (id, item_id, text_id, kind, modality, start_s, end_s, shard, row) "
                f"SELECT v.id, v.item_id, v.text_id, v.kind, v.modality, v.start_s, v.end_s, s.shard, s.row "
                f"FROM vectors_v1 v JOIN {V2_SLOTS} s ON s.id = v.id ORDER BY v.id")
    con.execute("DROP TABLE vectors_v1")
    con.execute(f"DROP TABLE {V2_SLOTS}")
    con.execute("UPDATE vector_shards SET live = (SELECT count(*) FROM vectors v "
                "WHERE v.kind = vector_shards.kind AND v.shard = vector_shards.shard)")
    set_version(con, 2)


def vacuum(con: sqlite3.Connection) -> None:
    """Give freed pages back to the disk; where there is no room to rewrite the file, it stays
    larger than it needs to be, and correct."""
    try:
        con.execute("VACUUM")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # VACUUM went through the WAL: empty it
    except sqlite3.OperationalError:
        pass


# -- 2 -> 3 ----------------------------------------------------------------------------------

def v3_add_columns(con: sqlite3.Connection) -> None:
    """`items.details` (the kind's own fields, JSON) and `items.failure` (the failure code)."""
    columns = {row[1] for row in con.execute("PRAGMA table_info(items)")}
    if "details" not in columns:
        con.execute("ALTER TABLE items ADD COLUMN details VARCHAR")
    if "failure" not in columns:
        con.execute("ALTER TABLE items ADD COLUMN failure VARCHAR(32)")


def v3_fill_details(con: sqlite3.Connection, batch: int) -> None:
    """Version 2's width, height and duration_s columns, as each item's JSON details."""
    last = 0
    while rows := con.execute(f"SELECT id, {', '.join(V3_FIELDS)} FROM items WHERE id > ? AND "
                              f"coalesce({', '.join(V3_FIELDS)}) IS NOT NULL ORDER BY id LIMIT ?",
                              (last, batch)).fetchall():
        con.executemany("UPDATE items SET details = ? WHERE id = ?",
                        [(json.dumps({name: value for name, value in zip(V3_FIELDS, row[1:], strict=True)
                                      if value is not None}), row[0]) for row in rows])
        last = rows[-1][0]


def v3_fill_failure(con: sqlite3.Connection, code: str) -> None:
    """The one code version 2 kept (as the end of the error text) into `items.failure`."""
    con.execute("UPDATE items SET failure = ? WHERE status = 'failed' AND substr(error, -?) = ?",
                (code, len(V2_NEEDS_AUDIO_TOWER_MARK), V2_NEEDS_AUDIO_TOWER_MARK))


def v3_drop_columns(con: sqlite3.Connection) -> None:
    """Drop version 2's kind-specific columns (SQLite 3.35+; an older SQLite leaves them, unused)."""
    if sqlite3.sqlite_version_info < (3, 35):
        return
    columns = {row[1] for row in con.execute("PRAGMA table_info(items)")}
    for name in V3_FIELDS:
        if name in columns:
            con.execute(f"ALTER TABLE items DROP COLUMN {name}")


# -- 3 -> 4 ----------------------------------------------------------------------------------

V4_PROGRESS = "migration_v4_progress"  # the last item id whose file was read again, while 3 -> 4 runs
V4_COLUMNS = (("taken_ts", "DOUBLE"), ("taken_at", "VARCHAR"), ("taken_source", "VARCHAR(16)"),
              ("taken_naive", "BOOLEAN"), ("latitude", "DOUBLE"), ("longitude", "DOUBLE"),
              ("camera_make", "VARCHAR"), ("camera_model", "VARCHAR"))
V4_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_items_taken ON items (taken_ts) WHERE taken_ts IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_items_place ON items (latitude, longitude) WHERE latitude IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_items_camera ON items (camera_make, camera_model) "
    "WHERE camera_make IS NOT NULL OR camera_model IS NOT NULL",
)


def v4_add_columns(con: sqlite3.Connection) -> None:
    """Date taken, place and camera columns with their indexes, and the progress row (in the
    caller's transaction; a second run finds them there)."""
    columns = {row[1] for row in con.execute("PRAGMA table_info(items)")}
    for name, sql_type in V4_COLUMNS:
        if name not in columns:
            con.execute(f"ALTER TABLE items ADD COLUMN {name} {sql_type}")
    for statement in V4_INDEXES:
        con.execute(statement)
    con.execute(f"CREATE TABLE IF NOT EXISTS {V4_PROGRESS} (id INTEGER PRIMARY KEY CHECK (id = 1), "
                f"last_item INTEGER NOT NULL)")
    con.execute(f"INSERT OR IGNORE INTO {V4_PROGRESS} (id, last_item) VALUES (1, 0)")


def v4_last_item(con: sqlite3.Connection) -> int:
    return int(con.execute(f"SELECT last_item FROM {V4_PROGRESS}").fetchone()[0])


def v4_items_to_read(con: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, bytes]]:
    """(id, path) of the next indexed files (text corpora have no such metadata), in id order."""
    return con.execute("SELECT id, path FROM items WHERE id > ? AND status = 'indexed' AND kind != 'text' "
                       "ORDER BY id LIMIT ?", (after, limit)).fetchall()


def v4_record(con: sqlite3.Connection, rows: list[tuple[Any, ...]], last_item: int) -> None:
    """(taken_ts, taken_at, taken_source, taken_naive, latitude, longitude, camera_make,
    camera_model, id) rows, and how far the pass got (the caller commits)."""
    con.executemany("UPDATE items SET taken_ts = ?, taken_at = ?, taken_source = ?, taken_naive = ?, latitude = ?, "
                    "longitude = ?, camera_make = ?, camera_model = ? WHERE id = ?", rows)
    con.execute(f"UPDATE {V4_PROGRESS} SET last_item = ?", (last_item,))


def v4_finish(con: sqlite3.Connection) -> None:
    con.execute(f"DROP TABLE IF EXISTS {V4_PROGRESS}")
    set_version(con, 4)


# -- 4 -> 5 ----------------------------------------------------------------------------------

V5_HASH_INDEX = "CREATE INDEX IF NOT EXISTS ix_items_hash ON items (content_hash) WHERE content_hash IS NOT NULL"


def v5_index_hashes(con: sqlite3.Connection) -> None:
    """The index that finds a file's exact copies (the caller's transaction)."""
    con.execute(V5_HASH_INDEX)
    set_version(con, 5)
