"""The metadata store: SQLAlchemy 2.0 ORM over SQLite in WAL mode.

The store is the source of truth. It holds every vector (float32 bytes) beside its item, so
a FAISS file can always be rebuilt from it; an index file is only a fast copy, named by the
store generation it matches.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (ForeignKey, Index, LargeBinary, String, create_engine, event, func,
                        select)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Item(Base):
    """One file on disk: an image, a text corpus, a video or an audio file."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String, unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    size: Mapped[int]
    mtime_ns: Mapped[int]
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None]
    height: Mapped[int | None]
    duration_s: Mapped[float | None]
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None]
    indexed_at: Mapped[datetime] = mapped_column(default=utcnow)

    texts: Mapped[list["Text"]] = relationship(back_populates="item", cascade="all, delete-orphan",
                                               passive_deletes=True)
    vectors: Mapped[list["Vector"]] = relationship(back_populates="item", cascade="all, delete-orphan",
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
    """One embedding; its row id is the FAISS id. `kind` names the index it lives in."""

    __tablename__ = "vectors"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    text_id: Mapped[int | None] = mapped_column(ForeignKey("texts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str] = mapped_column(String(16))  # which tower made it: image, text, audio
    model: Mapped[str] = mapped_column(String)
    start_s: Mapped[float | None]
    end_s: Mapped[float | None]
    embedding: Mapped[bytes] = mapped_column(LargeBinary)

    item: Mapped[Item] = relationship(back_populates="vectors")

    __table_args__ = (Index("ix_vectors_kind_id", "kind", "id"),)


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


def open_store(path: Path) -> sessionmaker[Session]:
    """Create or open the SQLite store; WAL lets readers query while an indexer writes."""
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)


def dispose(factory: sessionmaker[Session]) -> None:
    bind = factory.kw["bind"]
    if isinstance(bind, Engine):
        bind.dispose()


__all__ = ["Base", "Item", "Text", "Vector", "Manifest", "IndexState", "AudioModel", "open_store", "dispose",
           "select", "func"]
