"""The metadata store: SQLAlchemy 2.0 ORM over SQLite in WAL mode.

The store is the source of truth with the vector shards beside it (`retrieval/vectors.py`): it
says where every vector lives, so a FAISS file can always be rebuilt from them; an index file is
only a fast copy, named by the store generation it matches. The schema version is SQLite's
`PRAGMA user_version`; `retrieval/migrations.py` brings older libraries up to `SCHEMA_VERSION`.

Paths are stored as the file system's bytes (`paths.path_to_db`), so any name Linux allows
round-trips; the rest of jrsearch sees `str` paths (undecodable bytes as surrogate escapes).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from jrsearch.retrieval.catalog import SCHEMA_VERSION
from jrsearch.retrieval.types import ItemStatus


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


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
    width: Mapped[int | None]
    height: Mapped[int | None]
    duration_s: Mapped[float | None]
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None]
    indexed_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Only failures are looked up by status; an index on kind, status or hash would cost every
    # bulk write and ~100 bytes per file for lookups nothing makes.
    __table_args__ = (Index("ix_items_failed", "id", sqlite_where=sql_text(f"status = '{ItemStatus.FAILED.value}'")),)

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


__all__ = ["SCHEMA_VERSION", "AudioModel", "Base", "IndexState", "Item", "Manifest", "Text", "Vector", "VectorShard"]
