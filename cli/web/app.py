"""The FastAPI app over one `SearchService` (a library's, or an INDEXDIR's): search by text or by
an uploaded file, item metadata, thumbnails, media with ranges, status; plus the static search
page. Build it with `create_app(service, ...)`; the routes are in `cli/web/routes/`.

Handlers are plain `def`s, run on the server's thread pool; the services are safe to share.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from jrsearch.cli.web.routes import WebContext
from jrsearch.cli.web.routes.items import items_router
from jrsearch.cli.web.routes.search import search_router
from jrsearch.cli.web.routes.status import STATIC_DIR, status_router
from jrsearch.cli.web.security import AccessGuard, BodyLimit, TokenGuard
from jrsearch.cli.web.thumbnails import ThumbnailCache
from jrsearch.retrieval.errors import JrsearchError, LibraryError
from jrsearch.retrieval.image_url import MAX_QUERY_BYTES
from jrsearch.retrieval.service import SearchService

log = logging.getLogger("jrsearch.serve")
MAX_UPLOAD_BYTES = MAX_QUERY_BYTES  # the bound an image URL's answer has too (retrieval/image_url.py)
MULTIPART_OVERHEAD = 64 * 1024


def create_app(service: SearchService, *, token: str | None = None, allowed_hosts: Sequence[str] | None = None,
               thumbnail_dir: Path | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               warm: bool = True) -> FastAPI:
    """The server for one service (`retrieval/service.LibraryService`, `retrieval/cluster/search.ClusterService`).
    `token`: required on every API request when set. `allowed_hosts`: Host header names to answer
    (None: any). `thumbnail_dir`: default `thumbnails/` in the service's folder. `warm`: load the
    indexes and the text encoder before answering."""
    if warm:
        service.warm()
    guard = TokenGuard(token) if token else None
    thumbnails = ThumbnailCache(thumbnail_dir or service.root / "thumbnails")
    context = WebContext(service, guard, thumbnails, max_upload_bytes)

    app = FastAPI(title="jrsearch", version="0.1.0",
                  description="Cross-modal search over one jrsearch library: by text, by an example image or "
                              "sound; thumbnails and media of the results.")
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(AccessGuard, guard=guard, allowed_hosts=allowed_hosts)  # outermost: runs first
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in (status_router(context), search_router(context), items_router(context)):
        app.include_router(router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal is a 4xx with one clear `detail` string; nothing leaks a traceback."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
            parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(JrsearchError)
    async def refused(_request: Request, exc: JrsearchError) -> JSONResponse:
        code = 503 if isinstance(exc, LibraryError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("error serving %s", request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)
