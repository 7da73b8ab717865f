"""jrsearch: cross-modal search over your photos, texts, videos and sounds.

The design's folders (`retrieval/`, `indexer/`, `cli/`, `benchmarks/`) install as subpackages of this
one name (`pyproject.toml`'s package-dir), so `jrsearch.retrieval` is the only way to import them.

The Python API, for notebooks and scripts::

    import jrsearch
    s = jrsearch.open("~/Pictures/library")          # a library written by `jrsearch index`
    v = s.embed("text", "a dog on a beach")          # or s.embed("image", path), s.embed("audio", path)
    for r in s.search(v, jrsearch.SearchRequest(top_k=10)):
        print(r.score, r.kind, r.path)

Every CLI start imports this module (the cold `jrsearch query` included), so the names below are
imported on first use only (`__getattr__`): importing `jrsearch` imports nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from jrsearch.retrieval.request import Filters, Like, QueryTerm, SearchRequest
    from jrsearch.retrieval.service import SearchService
    from jrsearch.retrieval.types import ResultSet, SearchResult

__all__ = ["Filters", "Like", "QueryTerm", "ResultSet", "SearchRequest", "SearchResult", "SearchService", "open"]

_LAZY = {  # public name -> module that defines it
    "Filters": "jrsearch.retrieval.request",
    "SearchRequest": "jrsearch.retrieval.request",
    "Like": "jrsearch.retrieval.request",
    "QueryTerm": "jrsearch.retrieval.request",
    "SearchService": "jrsearch.retrieval.service",
    "ResultSet": "jrsearch.retrieval.types",
    "SearchResult": "jrsearch.retrieval.types",
}


def open(library: str | Path | None = None, *, model: str | None = None, pretrained: str | None = None,
         checkpoint: str | Path | None = None, precision: str = "auto", device: str | None = None,
         backend: str = "auto") -> SearchService:
    """The search service of a library (default: $JRSEARCH_LIBRARY, else the user's), with the model
    that built it unless `model` (with `pretrained` or `checkpoint`) names another; `precision`,
    `device` and `backend` as the CLI's options. Text queries use the library's exported numpy
    text tower where there is one, without importing torch."""
    from pathlib import Path

    from jrsearch.retrieval.service import LibraryService
    from jrsearch.retrieval.types import ModelChoice

    choice = ModelChoice(model, pretrained, Path(checkpoint).expanduser() if checkpoint else None, precision,
                         device, backend)
    return LibraryService.open(Path(library).expanduser() if library is not None else None, choice)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'jrsearch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
