"""Combined queries: the query vector is the normalised weighted sum of its terms' unit vectors
(the main query's weight 1), as rclip computes `"2:golden retriever" + ./pool.jpg - fruit`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jrsearch.retrieval.errors import QueryError
from jrsearch.retrieval.request import Like, QueryTerm, is_url
from jrsearch.retrieval.types import MediaKind

CANCELLED = 1e-6  # a weighted sum shorter than this has no direction left


def combined_vector(vector: np.ndarray | None, terms: Sequence[QueryTerm],
                    embed_term: Callable[[QueryTerm], np.ndarray]) -> np.ndarray:
    """`vector` (weight 1; None: the terms alone) plus each term's unit vector times its weight,
    normalised. Without terms, `vector` as it is."""
    if not terms:
        if vector is None:
            raise QueryError("nothing to search for: give words, an image, a sound, an item (like) or terms to add")
        return vector
    parts = [(1.0, vector)] if vector is not None else []
    parts += [(term.weight, embed_term(term)) for term in terms]
    total = np.zeros(parts[0][1].shape[-1], dtype=np.float64)
    for weight, part in parts:
        part = np.asarray(part, dtype=np.float64).reshape(-1)
        total += weight * part / np.linalg.norm(part)
    norm = np.linalg.norm(total)
    if not np.isfinite(norm) or norm < CANCELLED:
        raise QueryError("the query's terms cancel out (their weighted sum is zero): change a weight or a term")
    return (total / norm).astype(np.float32)


def term_vector(term: QueryTerm, embed: Callable[[str, str | Path], np.ndarray],
                like: Callable[[Like], np.ndarray]) -> np.ndarray:
    """One term's vector: words and files through `embed(modality, query)` (a service's), an image URL
    fetched (`image_url`) and embedded, an indexed item by `like` (its stored vector)."""
    value = term.value
    if isinstance(value, Like):
        return like(value)
    if isinstance(value, Path):
        return embed(file_modality(value), value)
    if is_url(value):
        from jrsearch.retrieval.image_url import fetched_image

        with fetched_image(value) as path:
            return embed("image", path)
    return embed("text", value)


def file_modality(path: Path) -> str:
    """"image" or "audio" for a query file, by its bytes; a `QueryError` for anything else."""
    from jrsearch.retrieval.sniff import probe_kind

    kind = probe_kind(path)
    if kind == MediaKind.IMAGE:
        return "image"
    if kind == MediaKind.AUDIO:
        return "audio"
    what = "a video: use like:PATH@SECONDS for an indexed moment" if kind == MediaKind.VIDEO else \
        "neither an image nor a sound"
    raise QueryError(f"{path} is {what}")
