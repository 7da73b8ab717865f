"""A text query in a fresh process without torch, open_clip or SQLAlchemy.

`quick_text_search(root, text, request)` gives what `LibraryService.search(embed("text", text), request)`
gives (the same `SearchResult`s, ranking and one-per-item/text dedupe) using the exported text
tower (`retrieval/query_model.py`), the library's catalog (`retrieval/catalog.py`: stdlib sqlite3,
opened read-only, so a full disk does not stop it), the FAISS file and the vector shards. It
returns None whenever it cannot answer exactly as the normal path would: no library or model
row, no or a stale text-tower export, an index file behind its store, a folder or metadata filter
with no filter columns at the store's generation (`filter_columns.py`), a SQLite or FAISS error.
The caller then takes the normal path, which rebuilds, loads or reports as usual.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from jrsearch.retrieval.catalog import SCHEMA_VERSION, Catalog, open_readable, schema_version
from jrsearch.retrieval.hf_text_tower import load_query_tower
from jrsearch.retrieval.paths import DB_NAME
from jrsearch.retrieval.ranking import ranked_search
from jrsearch.retrieval.request import Filters, SearchRequest
from jrsearch.retrieval.types import ModelSpec, SearchResult


def quick_text_search(root: Path, text: str, request: SearchRequest | None = None) -> list[SearchResult] | None:
    """The results of a text query, or None where only the normal path can answer it."""
    r = request or SearchRequest()
    db = root.expanduser() / DB_NAME
    if not text.strip() or not db.is_file():
        return None  # the normal path reports these
    try:
        con, _ = open_readable(db)
        with closing(con):
            return _search(Catalog(con), root.expanduser(), text, r.kind, r.top_k, r.nprobe, r.rerank,
                           r.filters if r.filters else None)
    except (sqlite3.Error, OSError, RuntimeError, ValueError):
        return None  # a damaged or half-written file: the normal path rebuilds or explains


def library_model_name(root: Path) -> str | None:
    """The name of the model that built the library at `root`, read without the ORM; None where unreadable."""
    db = root.expanduser() / DB_NAME
    try:
        con, _ = open_readable(db)
        with closing(con):
            model = Catalog(con).model()
    except (sqlite3.Error, OSError, ValueError):
        return None
    return model.name if model else None


def _search(catalog: Catalog, root: Path, text: str, kind: str, top_k: int, nprobe: int | None,
            rerank: int | None, filters: Filters | None) -> list[SearchResult] | None:
    from jrsearch.retrieval.index import DEFAULT_NPROBE
    from jrsearch.retrieval.index_set import IndexSet
    from jrsearch.retrieval.shards import ShardStore

    if schema_version(catalog.con) != SCHEMA_VERSION:
        return None  # the normal path migrates or refuses
    manifest = catalog.model()
    if manifest is None:
        return None
    kind = str(kind)  # a shipped kind's MediaKind member, or a registered kind's plain name
    state = catalog.index_state(kind)
    if state is None:
        return []

    @contextmanager
    def same_catalog() -> Iterator[Catalog]:
        yield catalog

    shards = ShardStore(root, lambda: manifest.dim, same_catalog)  # reads only: no writer
    indexes = IndexSet(root, shards, same_catalog, nprobe=nprobe or DEFAULT_NPROBE, rerank=rerank)
    index = indexes.saved(kind, state)
    if index is None:
        return None  # behind the store or missing: the normal path rebuilds it from the shards
    columns = None
    if filters is not None and filters.by_columns:
        columns = indexes.saved_columns(kind, state)
        if columns is None:
            return None  # the normal path builds them from the store
    tower = load_query_tower(root, ModelSpec(manifest.name, manifest.pretrained), manifest.dim)
    if tower is None:
        return None
    query = tower.encode_texts([text])
    if columns is not None and filters is not None:
        from jrsearch.retrieval.filter_columns import filtered_ranked_search  # filtered queries only

        return filtered_ranked_search(index, columns, query, top_k, filters, catalog.hits, nprobe, rerank,
                                      catalog.copies)
    return ranked_search(index, query, top_k, filters, catalog.hits, catalog.copies)
