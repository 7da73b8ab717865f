"""Schema versions and the numbered steps between them.

The version is SQLite's `PRAGMA user_version` (0 on files made before it was set: those are
version 1). `Library` runs `upgrade` under the write lock when it opens an older library, and
refuses a newer one. Each step is resumable: it commits in batches, can be interrupted at any
point and run again, and keeps the older jrsearch able to read the library until its last
commit, which is the only one that drops anything.

    1 -> 2   vectors move from float32 blobs in SQLite to float16 shard files
             (`retrieval/vectors.py`); paths become the file system's bytes.
             a. add the tables it needs beside the version-1 ones (which stay untouched)
             b. copy blobs to shards, 64k vectors per commit, oldest first, each batch fsynced
                before the commit that records where it went (ids not recorded: still to do)
             c. one commit: a new vectors table (metadata + shard/row, no blob) replaces the old
                one, paths become bytes, unused item indexes go, user_version = 2; then VACUUM
                gives the blobs' pages back to the disk
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from jrsearch.retrieval.catalog import count_shard_rows, schema_version, shard_tail, sqlite_connection
from jrsearch.retrieval.paths import VECTORS_DIR
from jrsearch.retrieval.store import SCHEMA_VERSION, Base

MIGRATION_BATCH = 1 << 16
SLOTS = "migration_v2_slots"  # vector id -> (shard, row) while 1 -> 2 runs


def current_version(con: sqlite3.Connection) -> int:
    return schema_version(con)


def create(engine: Engine) -> None:
    """Make a new library's schema at `SCHEMA_VERSION` in one transaction: a crash or a full disk
    leaves either no tables or all of them (never a file that looks like an older version)."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    raw = engine.raw_connection()
    con = sqlite_connection(raw)
    level = con.isolation_level
    con.isolation_level = None  # explicit BEGIN/COMMIT around the DDL
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(con) == 0:
                for table in Base.metadata.sorted_tables:
                    con.execute(str(CreateTable(table).compile(dialect=engine.dialect)))
                    for index in table.indexes:
                        con.execute(str(CreateIndex(index).compile(dialect=engine.dialect)))
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.isolation_level = level
        raw.close()


def upgrade(engine: Engine, root: Path, version: int) -> None:
    """Run every step from `version` up to `SCHEMA_VERSION`; the caller holds the write lock."""
    for step in range(version, SCHEMA_VERSION):
        raw = engine.raw_connection()
        try:
            STEPS[step](sqlite_connection(raw), engine, root)
        finally:
            raw.close()


def _v1_to_v2(con: sqlite3.Connection, engine: Engine, root: Path) -> None:
    from sqlalchemy.schema import CreateIndex, CreateTable

    from jrsearch.retrieval.vectors import SHARD_ROWS, ShardSet

    # a. where each moved vector went, in a table of its own: the version-1 tables stay untouched
    con.execute(f"CREATE TABLE IF NOT EXISTS {SLOTS} (id INTEGER PRIMARY KEY, shard INTEGER NOT NULL, "
                f"row INTEGER NOT NULL)")
    con.commit()
    Base.metadata.tables["vector_shards"].create(engine, checkfirst=True)

    # b. blobs to shards, a batch per commit, in id order (one pass; a resumed run skips what is done)
    manifest = con.execute("SELECT dim FROM manifest").fetchone()
    shard_sets: dict[str, ShardSet] = {}
    last = 0
    while manifest is not None:
        batch = con.execute(f"SELECT v.id, v.kind, v.embedding FROM vectors v LEFT JOIN {SLOTS} s ON s.id = v.id "
                            f"WHERE v.id > ? AND s.id IS NULL ORDER BY v.id LIMIT ?",
                            (last, MIGRATION_BATCH)).fetchall()
        if not batch:
            break
        last = batch[-1][0]
        by_kind: dict[str, list[tuple[int, bytes]]] = {}
        for vid, kind, blob in batch:
            by_kind.setdefault(kind, []).append((vid, blob))
        con.execute(f"DELETE FROM {SLOTS} WHERE 0")  # take the write lock before reading the shard tails
        for kind, rows in by_kind.items():
            shards = shard_sets.setdefault(kind, ShardSet(root / VECTORS_DIR / kind, int(manifest[0])))
            vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), -1)
            numbers, slots = shards.append(vectors, shard_tail(con, kind), SHARD_ROWS)
            con.executemany(f"INSERT INTO {SLOTS} (id, shard, row) VALUES (?, ?, ?)",
                            zip([vid for vid, _ in rows], numbers.tolist(), slots.tolist(), strict=True))
            count_shard_rows(con, kind, numbers)
        con.commit()

    # c. one commit: the new vectors table from the old one's metadata and the slots, byte paths,
    #    live counts, only the item indexes something looks up, version 2
    table = Base.metadata.tables["vectors"]
    con.execute("UPDATE items SET path = CAST(path AS BLOB) WHERE typeof(path) = 'text'")
    for index in ("ix_items_kind", "ix_items_status", "ix_items_content_hash", "ix_vectors_kind_id",
                  "ix_vectors_item_id"):
        con.execute(f"DROP INDEX IF EXISTS {index}")
    con.execute("CREATE INDEX IF NOT EXISTS ix_items_failed ON items (id) WHERE status = 'failed'")
    con.execute("ALTER TABLE vectors RENAME TO vectors_v1")
    con.execute(str(CreateTable(table).compile(dialect=engine.dialect)))
    for vector_index in table.indexes:
        con.execute(str(CreateIndex(vector_index).compile(dialect=engine.dialect)))
    con.execute(f"INSERT INTO vectors (id, item_id, text_id, kind, modality, start_s, end_s, shard, row) "
                f"SELECT v.id, v.item_id, v.text_id, v.kind, v.modality, v.start_s, v.end_s, s.shard, s.row "
                f"FROM vectors_v1 v JOIN {SLOTS} s ON s.id = v.id ORDER BY v.id")
    con.execute("DROP TABLE vectors_v1")
    con.execute(f"DROP TABLE {SLOTS}")
    con.execute("UPDATE vector_shards SET live = (SELECT count(*) FROM vectors v "
                "WHERE v.kind = vector_shards.kind AND v.shard = vector_shards.shard)")
    con.execute("UPDATE manifest SET schema_version = 2")
    con.execute("PRAGMA user_version = 2")
    con.commit()
    try:
        con.execute("VACUUM")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # VACUUM went through the WAL: empty it
    except sqlite3.OperationalError:
        pass  # no room to rewrite the file: it stays larger than it needs to be, and correct


STEPS: dict[int, Callable[[sqlite3.Connection, Engine, Path], None]] = {1: _v1_to_v2}
