"""What a search asks for, beside the query's vector: `SearchRequest` and its `Filters`.

Light on purpose (stdlib only): the cold query path (`cli/quick`, `retrieval/quick_search`)
builds one too, and must not import numpy's neighbours, SQLAlchemy or torch to do it.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from jrsearch.retrieval.errors import QueryError


@dataclass(frozen=True)
class Filters:
    """Which results may be kept: under a folder, matching a glob (on the full path or the name),
    taken in a time range, near a place, by a camera. Build it with `Filters.make` (which normalises
    the folder and parses the texts the CLI and the API take); an empty one keeps all."""

    under: str | None = None  # an absolute folder ending in the path separator
    glob: str | None = None
    after: float | None = None  # date taken, POSIX seconds: kept from this instant on (inclusive)
    before: float | None = None  # ... and before this one (exclusive)
    near: tuple[float, float, float] | None = None  # latitude, longitude (degrees), radius (km)
    camera: str | None = None  # case-insensitive part of the camera's make and model

    @classmethod
    def make(cls, under: str | Path | None = None, glob: str | None = None, *, after: str | None = None,
             before: str | None = None, near: str | None = None, camera: str | None = None) -> Filters:
        """From the texts a user types (`--after 2024-06`, `--near 43.46,11.88,5`); a text that does
        not parse raises `QueryError` naming the option and the accepted form."""
        folder = os.path.join(os.path.abspath(os.path.expanduser(under)), "") if under else None
        return cls(folder, glob or None,
                   after=parse_date(after, "--after") if after else None,
                   before=parse_date(before, "--before", end=True) if before else None,
                   near=parse_near(near) if near else None, camera=(camera or "").strip() or None)

    def __bool__(self) -> bool:
        """False when the filters keep everything (the index is searched for `top_k` only)."""
        return self.under is not None or self.glob is not None or self.by_metadata

    @property
    def by_metadata(self) -> bool:
        """True where a filter reads what the files say of themselves (date, place, camera)."""
        return self.after is not None or self.before is not None or self.near is not None or self.camera is not None

    @property
    def by_columns(self) -> bool:
        """True where the store's filter columns resolve the filter to vector ids before the search
        (a folder, or what the files say of themselves); a glob alone is applied after it."""
        return self.under is not None or self.by_metadata

    def __call__(self, path: str) -> bool:
        """The path part of the filter (folder and glob); metadata filters are resolved by the store."""
        if self.under and not path.startswith(self.under):
            return False
        return not self.glob or fnmatch.fnmatch(path, self.glob) or fnmatch.fnmatch(os.path.basename(path), self.glob)

    def to_json(self) -> dict[str, Any]:
        """The filters that are set, as the API echoes them (times as ISO 8601 UTC)."""
        out: dict[str, Any] = {"under": self.under, "glob": self.glob, "camera": self.camera,
                               "near": list(self.near) if self.near else None}
        for key in ("after", "before"):
            value = getattr(self, key)
            out[key] = datetime.fromtimestamp(value, timezone.utc).isoformat() if value is not None else None
        return {k: v for k, v in out.items() if v is not None}


DATE_FORM = "YYYY, YYYY-MM, YYYY-MM-DD or ISO 8601 (2024-06-01T12:00:00+02:00)"
NEAR_FORM = "LAT,LON or LAT,LON,KM (degrees, e.g. 43.46,11.88,5; the radius defaults to 1 km)"


def parse_date(text: str, option: str, *, end: bool = False) -> float:
    """POSIX seconds of a date as typed. `end`: the end of the period a short date names
    (`--before 2024` keeps what was taken before 2025-01-01). A date without a zone is local time."""
    text = text.strip()
    try:
        if len(text) == 4 and text.isdigit():
            stamp = datetime(int(text) + 1 if end else int(text), 1, 1)
        elif len(text) == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit():
            year, month = int(text[:4]), int(text[5:])
            stamp = datetime(year, month, 1)
            if end:
                stamp = datetime(year + month // 12, month % 12 + 1, 1)
        else:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if end and len(text) == 10:
                stamp += timedelta(days=1)
    except ValueError:
        raise QueryError(f"{option} {text!r} is not a date: use {DATE_FORM}") from None
    return stamp.astimezone().timestamp()  # a date without a zone: this machine's, as for EXIF dates without one


def parse_near(text: str) -> tuple[float, float, float]:
    """(latitude, longitude, km) from `LAT,LON[,KM]`."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or not all(math.isfinite(v) for v in values):
        raise QueryError(f"--near {text!r} is not a place: use {NEAR_FORM}")
    lat, lon, km = values[0], values[1], values[2] if len(values) == 3 else 1.0
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and km > 0):
        raise QueryError(f"--near {text!r} is out of range: latitude -90..90, longitude -180..180, "
                         f"radius above 0; use {NEAR_FORM}")
    return lat, lon, km


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
    terms: tuple[QueryTerm, ...] = ()  # added to the query's vector (weight 1): a combined query

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", str(self.kind))  # a `MediaKind` member becomes its name
        if self.top_k < 1:
            raise QueryError(f"top_k must be at least 1, not {self.top_k}")


@dataclass(frozen=True)
class Like:
    """An indexed item as a query, by its stored vector (nothing is embedded again): `item` is its id
    or its path; `at_s` a moment of a video or sound (the vector whose time range covers it), `line`
    one line of a text corpus. Without either, the mean of the item's vectors."""

    item: int | str
    at_s: float | None = None
    line: int | None = None


@dataclass(frozen=True)
class QueryTerm:
    """One part of a combined query, added with its weight (negative: subtracted). `value`: words
    (str), an image URL (str starting http:// or https://), an image or sound file (Path), or an
    indexed item (`Like`). The query is the normalised weighted sum of the terms' unit vectors."""

    value: str | Path | Like
    weight: float = 1.0


WEIGHTED = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.+)$", re.DOTALL)  # rclip's `2:golden retriever`
LIKE_PREFIX = "like:"
TERM_FORM = ("[W:]TERM, where TERM is words, an image or sound file, an image URL (https://...) or an indexed "
             "item (like:PATH, like:PATH@SECONDS)")


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def parse_like(ref: str, *, by_id: bool = False) -> Like:
    """`REF`, `REF@SECONDS` (a moment of a video or sound) or `REF#LINE` (a line of a text corpus);
    REF is an item id where `by_id` (the web API), else a path."""
    at_s: float | None = None
    line: int | None = None
    head, sep, tail = ref.rpartition("@")
    if sep and _is_number(tail):
        ref, at_s = head, float(tail)
    else:
        head, sep, tail = ref.rpartition("#")
        if sep and tail.isdigit():
            ref, line = head, int(tail)
    if at_s is not None and not (math.isfinite(at_s) and at_s >= 0):
        raise QueryError(f"like {ref}@{tail}: the time must be seconds from the start (0 or more)")
    if not by_id:
        if not ref:
            raise QueryError("like: give the path of an indexed file (PATH, PATH@SECONDS or PATH#LINE)")
        return Like(ref, at_s, line)
    if not ref.isdigit():
        raise QueryError(f"like {ref!r} is not an item id (ID, ID@SECONDS or ID#LINE)")
    return Like(int(ref), at_s, line)


def parse_term(text: str, *, subtract: bool = False, files: bool = True) -> QueryTerm:
    """One `--add`/`--subtract` as rclip writes it (`2:golden retriever`, `fruit`, `./pool.jpg`,
    `https://.../cat.jpg`, `like:./clip.mp4@12`). `files`: an existing file's path is a file to
    embed (the CLI); the web API passes False (its terms are words, URLs and `like:ID`)."""
    weight, body = 1.0, text
    match = WEIGHTED.match(text)
    if match:
        weight, body = float(match.group(1)), match.group(2)
    body = body.strip()
    if not body:
        raise QueryError(f"empty query term {text!r}: use {TERM_FORM}")
    value: str | Path | Like = body
    if body.startswith(LIKE_PREFIX):
        value = parse_like(body[len(LIKE_PREFIX):].strip(), by_id=not files)
    elif files and not is_url(body) and os.path.isfile(os.path.expanduser(body)):
        value = Path(os.path.expanduser(body))
    return QueryTerm(value, -weight if subtract else weight)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
