"""What a search asks for, beside the query's vector: `SearchRequest` and its `Filters`.

Light on purpose (stdlib only): the cold query path (`cli/quick`, `retrieval/quick_search`)
builds one too, and must not import numpy's neighbours, SQLAlchemy or torch to do it.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from jrsearch.retrieval.errors import QueryError


@dataclass(frozen=True)
class Filters:
    """Which results may be kept: under a folder and/or matching a glob (on the full path or the
    name). Build it with `Filters.make` (which normalises the folder); an empty one keeps all."""

    under: str | None = None  # an absolute folder ending in the path separator
    glob: str | None = None

    @classmethod
    def make(cls, under: str | Path | None = None, glob: str | None = None) -> Filters:
        folder = os.path.join(os.path.abspath(os.path.expanduser(under)), "") if under else None
        return cls(folder, glob or None)

    def __bool__(self) -> bool:
        """False when the filters keep everything (the index is searched for `top_k` only)."""
        return self.under is not None or self.glob is not None

    def __call__(self, path: str) -> bool:
        if self.under and not path.startswith(self.under):
            return False
        return not self.glob or fnmatch.fnmatch(path, self.glob) or fnmatch.fnmatch(os.path.basename(path), self.glob)


@dataclass(frozen=True)
class SearchRequest:
    """One search, whatever answers it (`retrieval/service.SearchService`): the kind of result
    (a registered kind's name), how many, which may be kept, and the index's knobs (None: the
    index's defaults)."""

    kind: str = "image"
    top_k: int = 10
    filters: Filters = field(default_factory=Filters)
    nprobe: int | None = None  # IVF lists visited (recall vs speed)
    rerank: int | None = None  # candidates re-scored on the exact vectors (0: none)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", str(self.kind))  # a `MediaKind` member becomes its name
        if self.top_k < 1:
            raise QueryError(f"top_k must be at least 1, not {self.top_k}")
