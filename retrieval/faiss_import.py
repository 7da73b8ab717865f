"""The faiss module, imported on first use with the install line where it is missing; and the one
trick both filtered paths use to score rows faiss did not store: a flat index's own code storage
seen as a numpy array, rows gathered into it, then searched where they lie."""

from __future__ import annotations

from typing import Any

import numpy as np

from jrsearch.retrieval.extras import require


def load_faiss() -> Any:
    """The faiss module: faiss-cpu (a base dependency) or faiss-gpu-cu12 in its place (both install `faiss`)."""
    return require("faiss", "", "vector search",
                   install="pip install 'faiss-cpu>=1.8,<2' (or faiss-gpu-cu12 instead, on a CUDA 12 machine)")


def code_storage(index: Any, rows: int, row_bytes: int) -> np.ndarray:
    """The code storage of `index` (a flat-codes faiss index) sized for `rows` codes of `row_bytes`,
    as a (rows, row_bytes) uint8 array: a view into the index's own vector, valid while the index
    lives and is not resized."""
    index.codes.resize(rows * row_bytes)
    return load_faiss().rev_swig_ptr(index.codes.data(), rows * row_bytes).reshape(rows, row_bytes)


def search_stored(index: Any, query: np.ndarray, count: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions) of the best min(k, count) of the first `count` codes in `index`'s storage
    (`code_storage`), unordered."""
    if count == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    index.ntotal = count
    scores, top = index.search(query, min(k, count))
    return scores[0], top[0]
