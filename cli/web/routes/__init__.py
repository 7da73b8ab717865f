"""The web API's routers, each built for one app from its `WebContext`: `search` (by text, by an
uploaded file), `items` (metadata, thumbnails, media), `status` (the page, login, status, kinds)."""

from __future__ import annotations

from dataclasses import dataclass

from jrsearch.cli.web.security import TokenGuard
from jrsearch.cli.web.thumbnails import ThumbnailCache
from jrsearch.retrieval.service import SearchService

MAX_TOP_K = 200


@dataclass(frozen=True)
class WebContext:
    """What the routes of one app share."""

    service: SearchService
    guard: TokenGuard | None  # None: no token required
    thumbnails: ThumbnailCache
    max_upload_bytes: int
