"""The FastAPI app: search by text or by an uploaded file, item metadata, thumbnails, media with
ranges, status; plus the static search page. Build it with `create_app(library, ...)`.

Handlers are plain `def`s, run on the server's thread pool; `Searcher` makes the engine safe
and fresh for them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from jrsearch.cli.web.media import file_response, open_item, sniff_upload
from jrsearch.cli.web.searcher import Searcher
from jrsearch.cli.web.security import AccessGuard, BodyLimit, TokenGuard, human_bytes
from jrsearch.cli.web.thumbnails import SIZES, NoPicture, ThumbnailCache, picture_of
from jrsearch.indexer.handler import Picture
from jrsearch.indexer.kinds import KIND_HANDLERS
from jrsearch.retrieval.diskspace import is_disk_full
from jrsearch.retrieval.engine import PathFilter, SearchEngine
from jrsearch.retrieval.errors import JrsearchError, LibraryError, MediaError, QueryError
from jrsearch.retrieval.library import ItemRecord, Library
from jrsearch.retrieval.paths import display_path
from jrsearch.retrieval.query_language import english_only_hint
from jrsearch.retrieval.types import MediaKind, SearchResult

log = logging.getLogger("jrsearch.serve")
STATIC_DIR = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 20 * 2**20
MAX_TOP_K = 200
MAX_QUERY_CHARS = 1000
MULTIPART_OVERHEAD = 64 * 1024
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; script-src 'self'; "
            "style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
MAX_ITEM_ID = 2**63 - 1  # SQLite's INTEGER PRIMARY KEY is a signed 64-bit integer
ItemId = Annotated[int, PathParam(ge=1, le=MAX_ITEM_ID, description="An item id (from a search result).")]


class ResultOut(BaseModel):
    rank: int
    score: float
    item_id: int
    vector_id: int
    kind: str
    path: str
    name: str
    text: str | None = None
    line: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    thumbnail: str | None = None
    media: str


class SearchOut(BaseModel):
    query: dict[str, Any]
    took_ms: float  # embed_ms (the query's vector) + search_ms (index, store, filters)
    embed_ms: float
    search_ms: float
    results: list[ResultOut]
    partial: dict[str, Any] | None = None  # an INDEXDIR served with --allow-partial: shards that did not answer
    hint: str | None = None  # e.g. a query in another script on an English-only model's library


class ItemOut(BaseModel):
    id: int
    path: str
    name: str
    kind: str
    status: str
    error: str | None
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    duration_s: float | None
    indexed_at: str
    thumbnail: str | None
    media: str


class Login(BaseModel):
    token: str


def _thumbnail_url(item_id: int, kind: str, at_s: float | None = None) -> str | None:
    picture = picture_of(kind)
    if picture is None:
        return None
    at = f"&t={at_s:.1f}" if picture is Picture.FRAME and at_s else ""
    return f"/api/items/{item_id}/thumbnail?size=256{at}"


def _result_out(r: SearchResult) -> ResultOut:
    return ResultOut(rank=r.rank, score=round(r.score, 6), item_id=r.item_id, vector_id=r.vector_id,
                     kind=str(r.kind), path=display_path(r.path), name=display_path(os.path.basename(r.path)),
                     text=r.text, line=r.line,
                     start_s=r.start_s, end_s=r.end_s, thumbnail=_thumbnail_url(r.item_id, r.kind, r.start_s),
                     media=f"/api/items/{r.item_id}/media")


class SearchOptions(BaseModel):
    kind: str
    top_k: int
    under: str | None
    glob: str | None


def search_options(
    kind: Annotated[str, Query(max_length=64, description="What to find: image, text, video, audio, or a "
                                                         "kind a plugin registered.")] = MediaKind.IMAGE,
    top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="How many results.")] = 10,
    under: Annotated[str | None, Query(max_length=4096, description="Only results under this folder.")] = None,
    glob: Annotated[str | None, Query(max_length=512, description="Only paths (or names) matching this glob.")] = None,
) -> SearchOptions:
    if kind not in KIND_HANDLERS:
        *others, last = (f"'{name}'" for name in KIND_HANDLERS)  # pydantic's wording for an enum
        raise HTTPException(422, f"kind: Input should be {', '.join(others)} or {last}")
    return SearchOptions(kind=kind, top_k=top_k, under=under or None, glob=glob or None)


def create_app(library: Library | None, engine: SearchEngine | None = None, *, token: str | None = None,
               allowed_hosts: Sequence[str] | None = None, thumbnail_dir: Path | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, warm: bool = True,
               search_threads: int | None = None, searcher: Any = None) -> FastAPI:
    """The server for one library. `token`: required on every API request when set.
    `allowed_hosts`: Host header names to answer (None: any). `search_threads`: faiss threads
    per request (None: faiss's default). `searcher`: instead of a library, another source of
    results with items and status (`cli/web/index_searcher.IndexSearcher` for an INDEXDIR)."""
    if library is None:
        if searcher is None or thumbnail_dir is None:
            raise ValueError("create_app without a library needs a searcher and a thumbnail_dir")
        thumbnails = ThumbnailCache(thumbnail_dir)
    else:
        searcher = searcher or Searcher(library, engine or SearchEngine(library), search_threads)
        thumbnails = ThumbnailCache(thumbnail_dir or library.root / "thumbnails")
    guard = TokenGuard(token) if token else None
    if warm:
        searcher.warm()

    app = FastAPI(title="jrsearch", version="0.1.0",
                  description="Cross-modal search over one jrsearch library: by text, by an example image or "
                              "sound; thumbnails and media of the results.")
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(AccessGuard, guard=guard, allowed_hosts=allowed_hosts)  # outermost: runs first
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def run_search(vector: np.ndarray, options: SearchOptions, query: dict[str, Any], started: float) -> SearchOut:
        embedded = time.perf_counter()
        results = searcher.search(vector, options.kind, options.top_k, PathFilter.make(options.under, options.glob))
        done = time.perf_counter()
        return SearchOut(query={**query, **options.model_dump(mode="json")},
                         took_ms=round((done - started) * 1000, 2), embed_ms=round((embedded - started) * 1000, 2),
                         search_ms=round((done - embedded) * 1000, 2), results=[_result_out(r) for r in results],
                         partial=getattr(results, "partial", None))

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP,
                                                                 "Cache-Control": "no-cache"})

    @app.post("/api/login", summary="Exchange the token for a cookie (for the page)")
    def login(body: Login) -> JSONResponse:
        if guard is None:
            return JSONResponse({"ok": True, "token_required": False})
        if not guard.valid(body.token):
            raise HTTPException(401, "wrong token")
        response = JSONResponse({"ok": True, "token_required": True})
        guard.set_cookie(response)
        return response

    @app.get("/api/search", response_model=SearchOut, summary="Search by text")
    def search_text(q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS,
                                            description="Words to search for.")],
                    options: Annotated[SearchOptions, Depends(search_options)]) -> SearchOut:
        started = time.perf_counter()
        out = run_search(searcher.embed_text(q), options, {"text": q}, started)
        built = library.model() if library is not None else (searcher.engine.spec, 0)
        out.hint = english_only_hint(q, built[0].name) if built else None
        return out

    @app.post("/api/search/file", response_model=SearchOut, summary="Search by an example image or sound")
    def search_file(file: Annotated[UploadFile, File(description="An image (JPEG, PNG, GIF, WebP, BMP, TIFF) "
                                                                 "or a sound (WAV, FLAC, OGG, MP3).")],
                    options: Annotated[SearchOptions, Depends(search_options)]) -> SearchOut:
        started = time.perf_counter()
        data = file.file.read(max_upload_bytes + 1)
        name = os.path.basename(file.filename or "upload")
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload {name} is larger than {human_bytes(max_upload_bytes)}")
        if not data:
            raise HTTPException(400, f"upload {name} is empty")
        signature = sniff_upload(data)
        if signature is None:
            raise HTTPException(415, f"upload {name} is neither an image (JPEG, PNG, GIF, WebP, BMP, TIFF) "
                                     f"nor a sound (WAV, FLAC, OGG, MP3)")
        what = signature.kind.value
        try:
            with tempfile.TemporaryDirectory(prefix="jrsearch-upload-") as tmp:
                path = Path(tmp) / ("query" + signature.suffix)
                path.write_bytes(data)
                try:
                    vector = searcher.embed_file(path, what)
                except (MediaError, QueryError) as exc:  # about the upload: name it, not the temp file
                    raise HTTPException(400, _without_server_paths(str(exc), path, name)) from None
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise HTTPException(507, "the server's disk is full, so it cannot take an upload now; "
                                     "searching by text still works") from None
        return run_search(vector, options, {"file": name, "file_type": what}, started)

    def get_item(item_id: int) -> ItemRecord:
        # an INDEXDIR's searcher answers with a CatalogItem: a record with the same fields
        item = searcher.item(item_id) if library is None else library.item(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id} in this library")
        return item

    @app.get("/api/items/{item_id}", response_model=ItemOut, summary="One item's metadata")
    def item_metadata(item_id: ItemId) -> ItemOut:
        item = get_item(item_id)
        return ItemOut(id=item.id, path=display_path(item.path), name=display_path(os.path.basename(item.path)),
                       kind=item.kind,
                       status=item.status, error=item.error, size=item.size, mtime_ns=item.mtime_ns,
                       content_hash=item.content_hash, width=item.width, height=item.height,
                       duration_s=item.duration_s, indexed_at=item.indexed_at.isoformat(),
                       thumbnail=_thumbnail_url(item.id, item.kind), media=f"/api/items/{item.id}/media")

    @app.get("/api/items/{item_id}/thumbnail", summary="A JPEG thumbnail (images; videos at time t)",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def item_thumbnail(item_id: ItemId, size: Annotated[int, Query(description=f"One of {SIZES}.")] = 256,
                       t: Annotated[float | None, Query(ge=0, le=10**7, description="Video time, seconds.")] = None
                       ) -> Response:
        if size not in SIZES:
            raise HTTPException(422, f"size must be one of {', '.join(map(str, SIZES))}")
        item = get_item(item_id)
        if picture_of(item.kind) is None:
            raise HTTPException(404, f"item {item_id} is {item.kind}: only images and videos have thumbnails")
        try:
            jpeg = thumbnails.get(item, size, lambda: open_item(item).handle, t)
        except NoPicture as exc:
            raise HTTPException(404, f"item {item_id} has no thumbnail: {exc.reason}") from None
        except MediaError as exc:
            raise HTTPException(415, f"item {item_id}: no thumbnail: {exc.reason}") from None
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/items/{item_id}/media", summary="The item's file, with HTTP range requests",
             response_class=Response)
    def item_media(item_id: ItemId, request: Request) -> Response:
        return file_response(open_item(get_item(item_id)), request.headers.get("range"))

    @app.get("/api/status", summary="What the library holds and what the server runs")
    def status() -> dict[str, Any]:
        info = library.status() if library is not None else searcher.status()
        info["server"] = {"model": searcher.engine.spec.label(), "token_required": guard is not None,
                          "max_upload_bytes": max_upload_bytes, "max_top_k": MAX_TOP_K,
                          "audio_search": "audio" in searcher.engine.modalities(),
                          "text_encoder": "numpy text tower" if searcher.text_tower is not None else "torch"}
        return info

    return app


def _without_server_paths(message: str, upload: Path, name: str) -> str:
    """`message` with the upload's temp file (in any spelling) replaced by the uploaded file's name."""
    for spelling in {str(upload), os.path.realpath(upload)}:
        message = message.replace(spelling, f"upload {name}")
    for folder in {str(upload.parent), os.path.realpath(upload.parent)}:
        message = message.replace(folder, "(upload)")
    return message


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
