"""Small records and enums shared by every package."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any, overload

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
    taken_at: str | None = None  # date taken (ISO 8601, with its offset where the file gives one)
    latitude: float | None = None  # where it was taken (GPS), degrees
    longitude: float | None = None
    camera: str | None = None  # make and model
    # where taken_at came from: "exif", "container" (a video's creation_time), or "mtime": no date in
    # the file, its modification time instead (shown as "modified ...", not as a date taken)
    taken_source: str | None = None
    copies: tuple[str, ...] = ()  # the other indexed files with the same content (`ranking`)

    def to_json(self, *, nulls: bool = False) -> dict[str, Any]:
        """The one serialised form of a result (`jrsearch query --json`; the web API adds its links).
        `nulls`: keep text/line/start_s/end_s as None where a result has none (else left out)."""
        out: dict[str, Any] = {
            "rank": self.rank,
            "score": round(self.score, 6),
            "path": display_path(self.path),
            "kind": str(self.kind),
            "item_id": self.item_id,
            "vector_id": self.vector_id,
        }
        for key in ("text", "line", "start_s", "end_s", "taken_at", "taken_source", "latitude", "longitude",
                    "camera"):
            value = getattr(self, key)
            if value is not None or nulls:
                out[key] = value
        if self.copies or nulls:
            out["copies"] = [display_path(p) for p in self.copies]
        return out


@dataclass(frozen=True)
class Partial:
    """What a result set lacks: the serving shards of an INDEXDIR that did not answer."""

    missing_shards: list[str]  # their file names inside INDEXDIR
    vectors_missing: int

    def to_json(self) -> dict[str, Any]:
        return {"missing_shards": list(self.missing_shards), "vectors_missing": self.vectors_missing}


@dataclass(frozen=True)
class ResultSet(Sequence[SearchResult]):
    """The results of one search, best first, and `partial`: None, or what they lack."""

    results: tuple[SearchResult, ...] = ()
    partial: Partial | None = None

    @overload
    def __getitem__(self, i: int) -> SearchResult: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[SearchResult]: ...
    def __getitem__(self, i: int | slice) -> SearchResult | Sequence[SearchResult]:
        return self.results[i]

    def __len__(self) -> int:
        return len(self.results)


@dataclass(frozen=True)
class ModelChoice:
    """Which model a command or `jrsearch.open` asks for, and how to run it: every option None or
    "auto" means the library's own model on the best runtime here (`service.choose_model`)."""

    model: str | None = None  # a model name, e.g. ViT-B-32 or tiny-test
    pretrained: str | None = None  # an open_clip pretrained tag; "none" for random weights
    checkpoint: Path | None = None  # a local checkpoint for `model`, instead of a tag
    precision: str = "auto"
    device: str | None = None
    backend: str = "auto"

    @property
    def names_model(self) -> bool:
        """True where a model is named (else the library's is used)."""
        return bool(self.model or self.pretrained or self.checkpoint)

    @property
    def is_default(self) -> bool:
        """True where nothing is asked for: the cold query path may answer."""
        return not self.names_model and not self.device and (self.precision, self.backend) == ("auto", "auto")


JSON_SKIPPED = frozenset({"details", "failure"})  # flattened (details) or said by `error` (failure)


def record_json(record: Any) -> dict[str, Any]:
    """A record dataclass's fields as JSON values: paths for display, times as ISO 8601, enums as
    their values, a kind's own fields (`details`) at the top level (`ItemRecord` in the web API)."""
    out: dict[str, Any] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if f.name == "details":
            out.update(value)
        if f.name in JSON_SKIPPED:
            continue
        if f.name == "path" and isinstance(value, str):
            value = display_path(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, enum.Enum):
            value = value.value
        out[f.name] = value
    return out
