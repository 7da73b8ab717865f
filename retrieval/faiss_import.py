"""The faiss module, imported on first use with the install line where it is missing."""

from __future__ import annotations

from typing import Any

from jrsearch.retrieval.extras import require


def load_faiss() -> Any:
    """The faiss module: faiss-cpu (a base dependency) or faiss-gpu-cu12 in its place (both install `faiss`)."""
    return require("faiss", "", "vector search",
                   install="pip install 'faiss-cpu>=1.8,<2' (or faiss-gpu-cu12 instead, on a CUDA 12 machine)")
