"""Small records and enums shared by every package."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import PurePath

from jrsearch.retrieval.paths import display_path


class MediaKind(str, enum.Enum):
    """The kinds jrsearch ships. A kind is known everywhere by its name, a plain `str` (stored in
    `items.kind`, naming its index and shard folder); these members are such names, and a kind
    registered by a handler (`indexer/kinds.py`) needs no member here. `str()` and formatting give
    the name, as for a `StrEnum`."""

    IMAGE = "image"
    TEXT = "text"
    VIDEO = "video"
    AUDIO = "audio"

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)


class ItemStatus(str, enum.Enum):
    """An item's `status` column: every reader and writer uses these members, the store their values."""

    INDEXED = "indexed"
    FAILED = "failed"

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)


@dataclass(frozen=True)
class ModelSpec:
    """Which joint model built a library: enough to load it again and to refuse another."""

    name: str
    pretrained: str  # an open_clip pretrained tag, a checkpoint path, or "" for random init

    def label(self, short: bool = False) -> str:
        """`name/pretrained` (just `name` for random init); `short` names a checkpoint by its file
        name only (report titles)."""
        if not self.pretrained:
            return self.name
        return f"{self.name}/{PurePath(self.pretrained).name if short else self.pretrained}"


@dataclass(frozen=True)
class SearchResult:
    rank: int
    score: float
    item_id: int
    vector_id: int
    path: str
    kind: str  # a kind's name (`MediaKind` for the shipped ones)
    text: str | None = None  # the caption/document for text results
    line: int | None = None  # line number of a text inside its corpus file
    start_s: float | None = None  # time range inside a video/audio file
    end_s: float | None = None

    def to_json(self) -> dict:
        out = {
            "rank": self.rank,
            "score": round(self.score, 6),
            "path": display_path(self.path),
            "kind": str(self.kind),
            "item_id": self.item_id,
            "vector_id": self.vector_id,
        }
        for key in ("text", "line", "start_s", "end_s"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out
