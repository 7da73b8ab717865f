"""More like this: an indexed item's stored vector as a query (catalog -> vector rows -> shard store),
nothing embedded again. A moment of a video or sound is the vector whose time range covers it; a
line of a text corpus is that line's vector; otherwise the item's vectors' mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jrsearch.retrieval.catalog import ItemRecord, VectorRecord
from jrsearch.retrieval.errors import QueryError
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.paths import display_path
from jrsearch.retrieval.request import Like

PICTURE = "image"  # a video's frames before its soundtrack: what its moment looks like


class NotIndexed(QueryError):
    """The item a "more like this" names is not in the library (the web API answers 404)."""


def like_vector(library: Library, like: Like) -> np.ndarray:
    """The unit vector `like` names, read from the shards as stored."""
    item = _item(library, like)
    name = display_path(item.path)
    rows = library.item_vectors(item.id)
    if not rows:
        why = f" (it failed: {item.error})" if item.error else ""
        raise QueryError(f"{name} has no stored vector{why}; search by its content with --image or --audio instead")
    chosen = _chosen(rows, like, name)
    vectors = library.shards.source(item.kind).get(np.array([r.id for r in chosen], dtype=np.int64))
    if np.isnan(vectors).any():
        raise QueryError(f"{name}'s vectors are missing from the library's shards; run `jrsearch index` on it again")
    total = vectors.sum(axis=0)
    return (total / np.linalg.norm(total)).astype(np.float32)


def _item(library: Library, like: Like) -> ItemRecord:
    if isinstance(like.item, int):
        item = library.item(like.item)
        if item is None:
            raise NotIndexed(f"item {like.item} is not in the library {library.root}")
        return item
    path = Path(like.item).expanduser().resolve()
    item = library.item_at(str(path))
    if item is None:
        raise NotIndexed(f"{display_path(str(path))} is not indexed; search by its content with "
                         f"--image {like.item} (or --audio), or index it first")
    return item


def _chosen(rows: list[VectorRecord], like: Like, name: str) -> list[VectorRecord]:
    if like.line is not None:
        chosen = [r for r in rows if r.line == like.line]
        if not chosen:
            lines = [r.line for r in rows if r.line is not None]
            span = f"lines {min(lines)}-{max(lines)}" if lines else "no lines (it is not a text corpus)"
            raise QueryError(f"{name} has no line {like.line}: it has {span}")
        return chosen
    pictures = [r for r in rows if r.modality == PICTURE] or rows
    if like.at_s is None:
        return pictures
    timed = [r for r in pictures if r.start_s is not None and r.end_s is not None]
    if not timed:
        raise QueryError(f"{name} has no time ranges: drop @{like.at_s:g} to search like the whole file")
    last = max(r.end_s or 0.0 for r in timed)
    covering = [r for r in timed if (r.start_s or 0.0) <= like.at_s < (r.end_s or 0.0)
                or like.at_s == r.end_s == last]
    if not covering:
        raise QueryError(f"{name} has no vector at {like.at_s:g} s: its vectors cover "
                         f"{min(r.start_s or 0.0 for r in timed):g}-{last:g} s")
    return covering[:1]
