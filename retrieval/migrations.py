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
    2 -> 3   kind-specific item fields become data, the failure code a column: one transaction
             adds `items.details` (JSON: width, height, duration_s where set) and `items.failure`,
             fills the code from the end of the error text that version 2 marked it with (the
             last time anything reads it there), drops the three columns, user_version = 3.
             A new kind with fields of its own then needs no schema change.
    3 -> 4   what files say of themselves becomes item columns (date taken, place, camera):
             a. one commit adds the columns, their indexes and a progress row
             b. every indexed file (not text corpora) is read again, headers only
                (`media_metadata.file_metadata`; nothing is embedded again), METADATA_BATCH files
                per commit, each commit recording the last item done: a killed run resumes there;
                a file gone from disk, or unreadable, keeps NULLs
             c. one commit drops the progress row, user_version = 4; then the filter columns
                beside the indexes (`filter_columns.py`) are written afresh from the new data
    4 -> 5   one transaction: an index on `items.content_hash` (results show a file's exact copies),
             user_version = 5

The statements of each step live in `catalog_steps.py`; this module runs them in order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from jrsearch.retrieval import catalog_steps as steps
from jrsearch.retrieval.catalog import schema_version, sqlite_connection
from jrsearch.retrieval.catalog_writer import CatalogWriter
from jrsearch.retrieval.errors import FailureCode
from jrsearch.retrieval.paths import VECTORS_DIR
from jrsearch.retrieval.store import SCHEMA_VERSION, Base

MIGRATION_BATCH = 1 << 16
METADATA_BATCH = 256  # files read again per commit by 3 -> 4
SLOTS = steps.V2_SLOTS


def current_version(con: sqlite3.Connection) -> int:
    return schema_version(con)


def _create_statements(engine: Engine, table_name: str | None = None) -> list[str]:
    """The DDL of the current schema (`store.py`): every table, or one, with its indexes."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    tables = [Base.metadata.tables[table_name]] if table_name else Base.metadata.sorted_tables
    statements = []
    for table in tables:
        statements.append(str(CreateTable(table).compile(dialect=engine.dialect)))
        statements += [str(CreateIndex(index).compile(dialect=engine.dialect)) for index in table.indexes]
    return statements


def create(engine: Engine) -> None:
    """Make a new library's schema at `SCHEMA_VERSION` in one transaction: a crash or a full disk
    leaves either no tables or all of them (never a file that looks like an older version)."""
    raw = engine.raw_connection()
    try:
        con = sqlite_connection(raw)
        with steps.one_transaction(con):
            if schema_version(con) == 0:
                for statement in _create_statements(engine):
                    con.execute(statement)
                steps.set_version(con, SCHEMA_VERSION)
    finally:
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
    # a. where each moved vector went, in a table of its own: the version-1 tables stay untouched
    dim = steps.v2_prepare(con)
    Base.metadata.tables["vector_shards"].create(engine, checkfirst=True)
    # b. blobs to shards, a batch per commit, in id order (one pass; a resumed run skips what is done)
    if dim is not None:
        _v2_move_blobs(con, root, dim)
    # c. one commit: the new vectors table, byte paths, live counts, version 2; then VACUUM
    steps.v2_finish(con, _create_statements(engine, "vectors"))
    con.commit()
    steps.vacuum(con)


def _v2_move_blobs(con: sqlite3.Connection, root: Path, dim: int) -> None:
    from jrsearch.retrieval.vectors import SHARD_ROWS, ShardSet

    shard_sets: dict[str, ShardSet] = {}
    writer = CatalogWriter(con)
    last = 0
    while batch := steps.v2_blobs_to_move(con, last, MIGRATION_BATCH):
        last = batch[-1][0]
        by_kind: dict[str, list[tuple[int, bytes]]] = {}
        for vid, kind, blob in batch:
            by_kind.setdefault(kind, []).append((vid, blob))
        steps.v2_lock(con)
        for kind, rows in by_kind.items():
            shards = shard_sets.setdefault(kind, ShardSet(root / VECTORS_DIR / kind, dim))
            vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), -1)
            numbers, slots = shards.append(vectors, writer.shard_tail(kind), SHARD_ROWS)
            steps.v2_record_moved(con, [vid for vid, _ in rows], numbers.tolist(), slots.tolist())
            writer.count_shard_rows(kind, numbers)
        con.commit()


def _v2_to_v3(con: sqlite3.Connection, engine: Engine, root: Path) -> None:
    with steps.one_transaction(con):
        steps.v3_add_columns(con)
        steps.v3_fill_details(con, MIGRATION_BATCH)
        steps.v3_fill_failure(con, FailureCode.NEEDS_AUDIO_TOWER.value)
        steps.v3_drop_columns(con)
        steps.set_version(con, 3)


def _v3_to_v4(con: sqlite3.Connection, engine: Engine, root: Path) -> None:
    from jrsearch.retrieval.catalog import Catalog
    from jrsearch.retrieval.catalog_writer import metadata_row
    from jrsearch.retrieval.filter_columns import rebuild_saved_columns
    from jrsearch.retrieval.media_metadata import file_metadata
    from jrsearch.retrieval.paths import path_from_db

    with steps.one_transaction(con):
        steps.v4_add_columns(con)
    last = steps.v4_last_item(con)
    while batch := steps.v4_items_to_read(con, last, METADATA_BATCH):
        rows = [(*metadata_row(file_metadata(Path(path_from_db(path)))), item_id) for item_id, path in batch]
        last = batch[-1][0]
        with steps.one_transaction(con):
            steps.v4_record(con, rows, last)
    with steps.one_transaction(con):
        steps.v4_finish(con)
    rebuild_saved_columns(root, Catalog(con))


def _v4_to_v5(con: sqlite3.Connection, engine: Engine, root: Path) -> None:
    with steps.one_transaction(con):
        steps.v5_index_hashes(con)


STEPS: dict[int, Callable[[sqlite3.Connection, Engine, Path], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4,
                                                                         4: _v4_to_v5}
