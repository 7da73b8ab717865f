"""Schema versions and the numbered steps between them.

The version is SQLite's `PRAGMA user_version` (0 on files made before it was set: those are
version 1). `Library` runs `upgrade` under the write lock when it opens an older library, and
refuses a newer one. Each step is resumable: it commits in batches, can be interrupted at any
point and run again, and keeps the older jrsearch able to read the library until its last
commit, which is the only one that drops anything.

    1 -> 2   vectors move from float32 blobs in SQLite to float16 shard files
             (`retrieval/vectors.py`); paths become the file system's bytes.
             a. add vectors.shard/row and the vector_shards table (version 1 code ignores them)
             b. copy blobs to shards, 64k vectors per commit, oldest first, each batch fsynced
                before the commit that points at it (rows still NULL are what is left to do)
             c. one commit: paths to bytes, live counts recounted, the blob and model columns
                dropped, user_version = 2; then VACUUM gives the blobs' pages back to the disk
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy.engine import Engine

from retrieval.catalog import schema_version
from retrieval.paths import VECTORS_DIR
from retrieval.store import SCHEMA_VERSION, Base

MIGRATION_BATCH = 1 << 16


def current_version(con: sqlite3.Connection) -> int:
    return schema_version(con)


def upgrade(engine: Engine, root: Path, version: int) -> None:
    """Run every step from `version` up to `SCHEMA_VERSION`; the caller holds the write lock."""
    for step in range(version, SCHEMA_VERSION):
        raw = engine.raw_connection()
        try:
            STEPS[step](raw.driver_connection, engine, root)
        finally:
            raw.close()


def _v1_to_v2(con: sqlite3.Connection, engine: Engine, root: Path) -> None:
    from retrieval.library import _count_rows, _tail
    from retrieval.vectors import SHARD_ROWS, ShardSet

    columns = {row[1] for row in con.execute("PRAGMA table_info(vectors)")}
    for column in ("shard", "row"):
        if column not in columns:
            con.execute(f"ALTER TABLE vectors ADD COLUMN {column} INTEGER")
            con.commit()
    Base.metadata.tables["vector_shards"].create(engine, checkfirst=True)

    manifest = con.execute("SELECT dim FROM manifest").fetchone()
    shard_sets: dict[str, ShardSet] = {}
    while manifest is not None:
        batch = con.execute("SELECT id, kind, embedding FROM vectors WHERE shard IS NULL ORDER BY id LIMIT ?",
                            (MIGRATION_BATCH,)).fetchall()
        if not batch:
            break
        by_kind: dict[str, list[tuple[int, bytes]]] = {}
        for vid, kind, blob in batch:
            by_kind.setdefault(kind, []).append((vid, blob))
        con.execute("UPDATE index_state SET generation = generation WHERE 0")  # take the write lock first
        for kind, rows in by_kind.items():
            shards = shard_sets.setdefault(kind, ShardSet(root / VECTORS_DIR / kind, int(manifest[0])))
            vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), -1)
            numbers, slots = shards.append(vectors, _tail(con, kind), SHARD_ROWS)
            con.executemany("UPDATE vectors SET shard = ?, row = ? WHERE id = ?",
                            zip(numbers.tolist(), slots.tolist(), [vid for vid, _ in rows]))
            _count_rows(con, kind, numbers)
        con.commit()

    con.execute("UPDATE items SET path = CAST(path AS BLOB) WHERE typeof(path) = 'text'")
    for index in ("ix_items_kind", "ix_items_status", "ix_items_content_hash"):
        con.execute(f"DROP INDEX IF EXISTS {index}")
    con.execute("CREATE INDEX IF NOT EXISTS ix_items_failed ON items (id) WHERE status = 'failed'")
    con.execute("UPDATE vector_shards SET live = (SELECT count(*) FROM vectors v "
                "WHERE v.kind = vector_shards.kind AND v.shard = vector_shards.shard)")
    con.execute("ALTER TABLE vectors DROP COLUMN embedding")
    con.execute("ALTER TABLE vectors DROP COLUMN model")
    con.execute("UPDATE manifest SET schema_version = 2")
    con.execute("PRAGMA user_version = 2")
    con.commit()
    try:
        con.execute("VACUUM")
    except sqlite3.OperationalError:
        pass  # no room to rewrite the file: it stays larger than it needs to be, and correct


STEPS: dict[int, Callable[[sqlite3.Connection, Engine, Path], None]] = {1: _v1_to_v2}
