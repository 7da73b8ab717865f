"""A library on disk: the SQLite store, one FAISS index per media kind, and the manifest.

    LIBRARY/library.db        items, texts, vectors (with their float32 bytes), manifest
    LIBRARY/index/KIND.faiss  a copy of KIND's vectors in the index type the manifest names

Rows are committed first; index files are written after, atomically, and the store records
which generation each file matches. An index file behind its store (a crash, a kill -9) is
rebuilt from the stored vectors on the next open, so the two never disagree for long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.errors import LibraryError, ModelMismatchError
from retrieval.index import DEFAULT_NPROBE, VectorIndex, choose_factory
from retrieval.paths import DB_NAME, default_library_dir
from retrieval.store import AudioModel, IndexState, Item, Manifest, SCHEMA_VERSION, Text, Vector, dispose, open_store, utcnow
from retrieval.types import ItemStatus, MediaKind, ModelSpec
from sqlalchemy import delete, func, insert, select

LOCK_NAME = "write.lock"


@dataclass
class FileRecord:
    """What the indexer learned about one file, ready to be stored."""

    path: str
    kind: MediaKind
    size: int
    mtime_ns: int
    content_hash: str | None
    status: ItemStatus
    error: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    vectors: np.ndarray | None = None  # (n, dim) float32, one row per vector of this file
    modality: str = "image"  # the tower that made the vectors
    texts: list[tuple[int, str]] = field(default_factory=list)  # (line, text) per vector row
    segments: list[tuple[float | None, float | None]] = field(default_factory=list)  # per vector row
    modalities: list[str] = field(default_factory=list)  # per vector row when they differ (video: image + audio)


@dataclass(frozen=True)
class KnownFile:
    id: int
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str


class Library:
    """Open with `Library.open(root)`; a writer holds `root/write.lock` via `writing()`."""

    def __init__(self, root: Path, nprobe: int = DEFAULT_NPROBE) -> None:
        self.root = root
        self.nprobe = nprobe
        self.sessions = open_store(root / DB_NAME)
        self._indexes: dict[str, VectorIndex] = {}
        self._rebuild: set[str] = set()
        self._model: tuple[ModelSpec, int] | None = None  # fixed once written, so read once

    @classmethod
    def open(cls, root: Path | None = None, create: bool = False, nprobe: int = DEFAULT_NPROBE) -> "Library":
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
        dispose(self.sessions)

    def writing(self):
        """An exclusive lock for one writer; a second `jrsearch index` fails at once, clearly."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.root / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise LibraryError(
                f"another `jrsearch index` is writing to {self.root}; wait for it to finish "
                f"(or remove {self.root / LOCK_NAME} if no such process is running)") from None
        return lock

    # -- the model ------------------------------------------------------------------------

    def model(self) -> tuple[ModelSpec, int] | None:
        if self._model is None:
            with self.sessions() as session:
                row = session.scalars(select(Manifest)).first()
            self._model = (ModelSpec(row.model_name, row.pretrained), row.dim) if row else None
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
            with self.sessions.begin() as session:
                session.add(Manifest(id=1, schema_version=SCHEMA_VERSION, model_name=spec.name,
                                     pretrained=spec.pretrained, dim=dim))

    # -- what is indexed -------------------------------------------------------------------

    def known_files(self) -> dict[str, KnownFile]:
        with self.sessions() as session:
            rows = session.execute(select(Item.path, Item.id, Item.size, Item.mtime_ns, Item.content_hash, Item.status))
            return {r.path: KnownFile(r.id, r.size, r.mtime_ns, r.content_hash, r.status) for r in rows}

    def touch(self, path: str, size: int, mtime_ns: int) -> None:
        """A file whose bytes did not change (same hash) gets its new size/mtime recorded."""
        with self.sessions.begin() as session:
            session.execute(Item.__table__.update().where(Item.path == path).values(size=size, mtime_ns=mtime_ns))

    def write(self, records: list[FileRecord]) -> None:
        """Store files (replacing any earlier row for the same path) in one transaction.

        Items, texts and vectors each go in as one bulk INSERT ... RETURNING rather than an ORM
        object per row: a batch of images or a 100k-line corpus is stored in seconds.
        """
        spec_dim = self.model()
        model_label = spec_dim[0].label() if spec_dim else ""
        now = utcnow()
        with self.sessions.begin() as session:
            removed = self._delete_paths(session, [r.path for r in records])
            item_ids = _bulk_insert(session, Item, [
                {"path": r.path, "kind": r.kind.value, "size": r.size, "mtime_ns": r.mtime_ns,
                 "content_hash": r.content_hash, "width": r.width, "height": r.height, "duration_s": r.duration_s,
                 "status": r.status.value, "error": r.error, "indexed_at": now} for r in records])
            embedded = [(item_id, r) for item_id, r in zip(item_ids, records) if r.vectors is not None and len(r.vectors)]
            text_ids = iter(_bulk_insert(session, Text, [{"item_id": item_id, "line": line, "text": text}
                                                         for item_id, r in embedded for line, text in r.texts]))
            rows, vectors = [], []
            for item_id, r in embedded:
                count = len(r.vectors)
                segments = r.segments or [(None, None)] * count
                modalities = r.modalities or [r.modality] * count
                for i, vector in enumerate(np.asarray(r.vectors, dtype=np.float32)):
                    rows.append({"item_id": item_id, "text_id": next(text_ids) if r.texts else None,
                                 "kind": r.kind.value, "modality": modalities[i], "model": model_label,
                                 "start_s": segments[i][0], "end_s": segments[i][1], "embedding": vector.tobytes()})
                    vectors.append(vector)
            vector_ids = _bulk_insert(session, Vector, rows)
            added: dict[str, tuple[list[np.ndarray], list[int]]] = {}
            for row, vector, vector_id in zip(rows, vectors, vector_ids):
                kind_vectors, kind_ids = added.setdefault(row["kind"], ([], []))
                kind_vectors.append(vector)
                kind_ids.append(vector_id)
            self._bump(session, set(added) | set(removed))
        self._apply({kind: (np.stack(v), np.array(i)) for kind, (v, i) in added.items()}, removed)

    def remove(self, paths: list[str]) -> int:
        """Forget files (deleted from disk); returns how many items were removed."""
        if not paths:
            return 0
        with self.sessions.begin() as session:
            removed = self._delete_paths(session, paths)
            self._bump(session, set(removed))
        self._apply({}, removed)
        return len(paths)

    def _delete_paths(self, session, paths: list[str]) -> dict[str, list[int]]:
        removed: dict[str, list[int]] = {}
        for chunk in _chunks(paths, 500):
            rows = session.execute(select(Vector.kind, Vector.id).join(Item).where(Item.path.in_(chunk)))
            for kind, vid in rows:
                removed.setdefault(kind, []).append(vid)
            session.execute(delete(Item).where(Item.path.in_(chunk)))
        return removed

    def _bump(self, session, kinds: set[str]) -> None:
        for kind in kinds:
            state = session.get(IndexState, kind)
            if state is None:
                session.add(IndexState(kind=kind, factory="", generation=1, built_generation=-1))
            else:
                state.generation += 1

    def _apply(self, added: dict[str, tuple[np.ndarray, np.ndarray]], removed: dict[str, list[int]]) -> None:
        """Mirror a committed change in the loaded indexes; anything not loaded is rebuilt on save."""
        for kind, ids in removed.items():
            index = self._indexes.get(kind)
            if index is not None and not index.remove(np.array(ids)):
                self._rebuild.add(kind)
        for kind, (vectors, ids) in added.items():
            index = self._indexes.get(kind)
            if index is not None and kind not in self._rebuild:
                index.add(vectors, ids)

    # -- indexes ---------------------------------------------------------------------------

    def index_path(self, kind: str) -> Path:
        return self.root / "index" / f"{kind}.faiss"

    def index(self, kind: MediaKind | str) -> VectorIndex | None:
        """The index for a kind, loaded from its file or rebuilt from the store if stale."""
        kind = MediaKind(kind).value
        if kind in self._indexes:
            return self._indexes[kind]
        with self.sessions() as session:
            state = session.get(IndexState, kind)
        if state is None:
            return None
        path = self.index_path(kind)
        if state.built_generation == state.generation and state.factory and path.exists():
            index = VectorIndex.load(path, state.factory, self.nprobe, trained_on=state.trained_on)
        else:
            index = self._build(kind)
        self._indexes[kind] = index
        return index

    def refresh(self) -> list[str]:
        """Forget loaded indexes that another process has changed since; returns their kinds.

        A long-running reader (`jrsearch serve`) calls this per request: one small SELECT. A
        dropped index is loaded again, at the last committed state, on its next use.
        """
        with self.sessions() as session:
            current = dict(session.execute(select(IndexState.kind, IndexState.generation)).all())
        seen: dict[str, int] = self.__dict__.setdefault("_seen_generations", {})
        dropped = [kind for kind in list(self._indexes) if seen.get(kind) != current.get(kind)]
        for kind in dropped:
            self._indexes.pop(kind, None)
        seen.clear()
        seen.update(current)  # an index loaded after this read is at least this new
        return dropped

    def load_indexes(self) -> None:
        """Load every existing index so that writes can be mirrored into them incrementally."""
        with self.sessions() as session:
            kinds = session.scalars(select(IndexState.kind)).all()
        for kind in kinds:
            self.index(kind)

    def stored_vectors(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """Every vector of a kind from the store: (ids, (n, dim) float32)."""
        spec_dim = self.model()
        dim = spec_dim[1] if spec_dim else 0
        with self.sessions() as session:
            rows = session.execute(select(Vector.id, Vector.embedding).where(Vector.kind == kind).order_by(Vector.id)).all()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vectors

    def _build(self, kind: str) -> VectorIndex:
        ids, vectors = self.stored_vectors(kind)
        dim = self.model()[1]
        self._rebuild.discard(kind)
        return VectorIndex.build(vectors, ids, dim, choose_factory(len(ids), dim), nprobe=self.nprobe)

    def save_indexes(self) -> None:
        """Write every index whose file is behind the store; retrain where the size outgrew it."""
        with self.sessions() as session:
            states = {s.kind: (s.generation, s.built_generation) for s in session.scalars(select(IndexState))}
        for kind, (generation, built) in states.items():
            if generation == built and kind not in self._rebuild:
                continue
            index = self._indexes.get(kind)
            dim = self.model()[1]
            if index is None or kind in self._rebuild or choose_factory(index.ntotal, dim) != index.factory:
                index = self._indexes[kind] = self._build(kind)
            index.save(self.index_path(kind))
            with self.sessions.begin() as session:
                state = session.get(IndexState, kind)
                if state.generation != generation:  # another write landed meanwhile: keep it stale
                    continue
                state.built_generation = generation
                state.factory = index.factory
                state.trained_on = index.trained_on
                state.built_at = utcnow()

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict:
        spec_dim = self.model()
        with self.sessions() as session:
            counts = session.execute(select(Item.kind, Item.status, func.count()).group_by(Item.kind, Item.status)).all()
            vectors = dict(session.execute(select(Vector.kind, func.count()).group_by(Vector.kind)).all())
            texts = session.scalar(select(func.count()).select_from(Text))
            states = session.scalars(select(IndexState)).all()
            audio = session.scalars(select(AudioModel)).first()
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
                                 "built_at": s.built_at.isoformat() if s.built_at else None} for s in states},
            "bytes_on_disk": sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()),
        }

    def failures(self) -> list[tuple[str, str]]:
        with self.sessions() as session:
            return list(session.execute(select(Item.path, Item.error).where(Item.status == ItemStatus.FAILED.value)
                                        .order_by(Item.path)).all())


def _bulk_insert(session, table, rows: list[dict]) -> list[int]:
    """INSERT many rows in one statement; their new ids, in the order of `rows`."""
    if not rows:
        return []
    statement = insert(table).returning(table.id, sort_by_parameter_order=True)
    return list(session.scalars(statement, rows))


def _chunks(values: list, size: int):
    for start in range(0, len(values), size):
        yield values[start:start + size]
