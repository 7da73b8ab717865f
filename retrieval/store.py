"""The metadata store: its schema (SQLAlchemy table metadata, the one definition) and `Store`,
the pool of sqlite3 connections (SQLite in WAL mode) that the catalog's statements run on.

The store is the source of truth with the vector shards beside it (`retrieval/vectors.py`): it
says where every vector lives, so a FAISS file can always be rebuilt from them; an index file is
only a fast copy, named by the store generation it matches. The schema version is SQLite's
`PRAGMA user_version`; `retrieval/migrations.py` brings older libraries up to `SCHEMA_VERSION`.

The mapped classes below are the schema only: `migrations.create` makes a new library's tables
from them and a schema step its new tables; no query goes through the ORM. Every statement lives
in the catalog (`catalog.py` reads, `catalog_writer.py` writes, `catalog_steps.py` schema steps),
in plain SQL on sqlite3, so the cold query path shares the reads without importing SQLAlchemy.

Paths are stored as the file system's bytes (`paths.path_to_db`), so any name Linux allows
round-trips; the rest of jrsearch sees `str` paths (undecodable bytes as surrogate escapes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import ForeignKey, Index, LargeBinary, String, create_engine
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.pool import QueuePool

from jrsearch.retrieval.catalog import SCHEMA_VERSION, Catalog, connect, schema_version, sqlite_connection
from jrsearch.retrieval.catalog_writer import CatalogWriter, utcnow
from jrsearch.retrieval.types import ItemStatus


class Base(DeclarativeBase):
    pass


class Item(Base):
    """One file on disk: an image, a text corpus, a video or an audio file."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[bytes] = mapped_column(LargeBinary, unique=True)  # os.fsencode(path)
    kind: Mapped[str] = mapped_column(String(16))
    size: Mapped[int]
    mtime_ns: Mapped[int]
    content_hash: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str | None]  # the kind's own fields as a JSON object (width, height, duration_s, ...)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None]  # why it failed, as the report shows it
    failure: Mapped[str | None] = mapped_column(String(32))  # its `FailureCode` (NULL: none, or failed before v3)
    indexed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # what the file says of itself (`media_metadata.MediaMetadata`, read at index time; NULL: unknown)
    taken_ts: Mapped[float | None]  # date taken, POSIX seconds: what date filters compare
    taken_at: Mapped[str | None]  # the same instant as ISO 8601 with the file's UTC offset
    taken_source: Mapped[str | None] = mapped_column(String(16))  # exif, container or mtime
    taken_naive: Mapped[bool | None]  # the file gave no offset: the indexing machine's was assumed
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    camera_make: Mapped[str | None]
    camera_model: Mapped[str | None]

    # Only failures are looked up by status; an index on kind or status would cost every bulk
    # write and ~100 bytes per file for lookups nothing makes. Date, place and camera are looked
    # up by filters (partial: files that know none cost nothing); hashes by results (exact copies).
    __table_args__ = (
        Index("ix_items_failed", "id", sqlite_where=sql_text(f"status = '{ItemStatus.FAILED.value}'")),
        Index("ix_items_taken", "taken_ts", sqlite_where=sql_text("taken_ts IS NOT NULL")),
        Index("ix_items_place", "latitude", "longitude", sqlite_where=sql_text("latitude IS NOT NULL")),
        Index("ix_items_camera", "camera_make", "camera_model",
              sqlite_where=sql_text("camera_make IS NOT NULL OR camera_model IS NOT NULL")),
        Index("ix_items_hash", "content_hash", sqlite_where=sql_text("content_hash IS NOT NULL")),
    )

    texts: Mapped[list[Text]] = relationship(back_populates="item", cascade="all, delete-orphan",
                                               passive_deletes=True)
    vectors: Mapped[list[Vector]] = relationship(back_populates="item", cascade="all, delete-orphan",
                                                   passive_deletes=True)


class Text(Base):
    """One caption or document from a text corpus file (a line, a JSONL record, a TSV row)."""

    __tablename__ = "texts"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    line: Mapped[int]
    text: Mapped[str]

    item: Mapped[Item] = relationship(back_populates="texts")


class Vector(Base):
    """One embedding; its row id is the FAISS id. `kind` names the index it lives in, and
    (`shard`, `row`) where its float16 bytes are in that kind's shard files."""

    __tablename__ = "vectors"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    text_id: Mapped[int | None] = mapped_column(ForeignKey("texts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str] = mapped_column(String(16))  # which tower made it: image, text, audio
    start_s: Mapped[float | None]
    end_s: Mapped[float | None]
    shard: Mapped[int | None]  # NULL only while a version-1 library is being migrated
    row: Mapped[int | None]

    item: Mapped[Item] = relationship(back_populates="vectors")

    __table_args__ = (Index("ix_vectors_kind_id", "kind", "id"),)


class VectorShard(Base):
    """One shard file of a kind: rows committed into it, rows still referenced, dead once compacted."""

    __tablename__ = "vector_shards"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(primary_key=True)
    rows: Mapped[int] = mapped_column(default=0)
    live: Mapped[int] = mapped_column(default=0)
    dead: Mapped[bool] = mapped_column(default=False)  # its file is unlinked after the compaction commit


class Manifest(Base):
    """Which model built this library (one row)."""

    __tablename__ = "manifest"

    id: Mapped[int] = mapped_column(primary_key=True)
    schema_version: Mapped[int]
    model_name: Mapped[str]
    pretrained: Mapped[str]
    dim: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IndexState(Base):
    """One FAISS index per media kind: its factory string and the store generation it matches."""

    __tablename__ = "index_state"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    factory: Mapped[str]
    generation: Mapped[int] = mapped_column(default=0)  # bumped by every commit that changes vectors
    built_generation: Mapped[int] = mapped_column(default=-1)  # generation of the file on disk
    trained_on: Mapped[int] = mapped_column(default=0)
    built_at: Mapped[datetime | None]


class AudioModel(Base):
    """The audio tower whose vectors this library holds (one row, absent until one is used)."""

    __tablename__ = "audio_model"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str]  # the checkpoint file, absolute
    content_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # jrsearch or wav2clip
    dim: Mapped[int]
    adopted_at: Mapped[datetime] = mapped_column(default=utcnow)


class Store:
    """A library's SQLite file behind a pool of sqlite3 connections (SQLAlchemy's `QueuePool`, so
    the web server's threads each read on their own). `read()` lends one as a `Catalog`,
    `transaction()` as a `CatalogWriter` inside one transaction."""

    def __init__(self, engine: Engine, readonly: bool = False) -> None:
        self.engine = engine
        self.readonly = readonly

    @classmethod
    def open(cls, db: Path, readonly: bool = False, immutable: bool = False) -> Store:
        """The pool over `db`; a writer's connections are made (and can fail) on first use."""
        engine = create_engine("sqlite://", creator=lambda: connect(db, readonly=readonly, immutable=immutable),
                               poolclass=QueuePool)
        return cls(engine, readonly)

    def version(self) -> int:
        with self.raw() as con:
            return schema_version(con)

    @contextmanager
    def raw(self) -> Iterator[sqlite3.Connection]:
        """A pooled sqlite3 connection, as is (schema steps run their own transactions on it)."""
        with closing(self.engine.raw_connection()) as pooled:
            yield sqlite_connection(pooled)

    @contextmanager
    def read(self) -> Iterator[Catalog]:
        with self.raw() as con:
            yield Catalog(con)

    @contextmanager
    def transaction(self) -> Iterator[CatalogWriter]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.raw() as con:
            try:
                yield CatalogWriter(con)
            except BaseException:
                con.rollback()
                raise
            con.commit()

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = ["SCHEMA_VERSION", "AudioModel", "Base", "IndexState", "Item", "Manifest", "Store", "Text", "Vector",
           "VectorShard"]
