"""`/api/search` (text) and `/api/search/file` (an example image or sound): one `SearchRequest` each."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from jrsearch.cli.web.media import sniff_upload
from jrsearch.cli.web.models import SearchOut, result_out
from jrsearch.cli.web.routes import MAX_TOP_K, WebContext
from jrsearch.cli.web.routes.terms import QueryIn, query_params
from jrsearch.cli.web.security import human_bytes
from jrsearch.indexer.kinds import KIND_HANDLERS
from jrsearch.retrieval.diskspace import is_disk_full
from jrsearch.retrieval.errors import MediaError, QueryError
from jrsearch.retrieval.image_url import public_hosts_only
from jrsearch.retrieval.query_language import english_only_hint
from jrsearch.retrieval.request import Filters, QueryTerm, SearchRequest
from jrsearch.retrieval.service import SearchService, UnsupportedQuery
from jrsearch.retrieval.types import MediaKind


class SearchOptions(BaseModel):
    """The request's query parameters, as the response echoes them (as given), and the `Filters`
    they make (parsed when the parameters are read, so a bad date is refused before any embedding)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: str
    top_k: int
    under: str | None
    glob: str | None
    after: str | None = None
    before: str | None = None
    near: str | None = None
    camera: str | None = None
    filters: Filters = Field(default_factory=Filters, exclude=True)

    def request(self) -> SearchRequest:
        return SearchRequest(self.kind, self.top_k, self.filters)

    def echo(self) -> dict[str, Any]:
        """For the response's `query`: the parameters as given (kind, top_k, under, glob as always; the
        metadata filters where set) and, where any filter is set, `filters`: what they were read as
        (`Filters.to_json`: the absolute folder, dates as ISO 8601 UTC, `near` as [lat, lon, km])."""
        given = self.model_dump(mode="json")
        for name in METADATA_PARAMS:
            if given[name] is None:
                del given[name]
        return {**given, "filters": self.filters.to_json()} if self.filters else given


METADATA_PARAMS = ("after", "before", "near", "camera")
DATE_HELP = "YYYY, YYYY-MM, YYYY-MM-DD or ISO 8601; a date without a zone is the server's local time"


def search_options(
    kind: Annotated[str, Query(max_length=64, description="What to find: image, text, video, audio, or a "
                                                         "kind a plugin registered.")] = MediaKind.IMAGE,
    top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="How many results.")] = 10,
    under: Annotated[str | None, Query(max_length=4096, description="Only results under this folder.")] = None,
    glob: Annotated[str | None, Query(max_length=512, description="Only paths (or names) matching this glob.")] = None,
    after: Annotated[str | None, Query(max_length=64, description=f"Only what was taken on or after this date "
                                                                  f"({DATE_HELP}).")] = None,
    before: Annotated[str | None, Query(max_length=64, description=f"Only what was taken before the end of "
                                                                   f"this date ({DATE_HELP}).")] = None,
    near: Annotated[str | None, Query(max_length=100, description="Only what was taken near a place: LAT,LON "
                                                                  "or LAT,LON,KM (degrees; 1 km by default).")] = None,
    camera: Annotated[str | None, Query(max_length=200, description="Only what a camera whose make or model "
                                                                    "contains this took (any case).")] = None,
) -> SearchOptions:
    if kind not in KIND_HANDLERS:
        *others, last = (f"'{name}'" for name in KIND_HANDLERS)  # pydantic's wording for an enum
        raise HTTPException(422, f"kind: Input should be {', '.join(others)} or {last}")
    texts = {name: (value or "").strip() or None for name, value in
             (("after", after), ("before", before), ("near", near), ("camera", camera))}
    try:
        filters = Filters.make(under or None, glob or None, **texts)
    except QueryError as exc:  # `--after '2024-13' is not a date: ...`: the option named as the parameter
        raise HTTPException(422, str(exc).removeprefix("--")) from None
    return SearchOptions(kind=kind, top_k=top_k, under=under or None, glob=glob or None, filters=filters, **texts)
Options = Annotated[SearchOptions, Depends(search_options)]


def run_search(service: SearchService, vector: np.ndarray | None, options: SearchOptions, query: dict[str, Any],
               started: float, terms: tuple[QueryTerm, ...] = ()) -> SearchOut:
    """`embed_ms`: the main query's; `search_ms` includes the terms' (stored vectors, URLs fetched)."""
    embedded = time.perf_counter()
    with public_hosts_only():  # a URL term, and every redirect it takes, must lead to a public host
        found = service.search(vector, replace(options.request(), terms=terms))
    done = time.perf_counter()
    return SearchOut(query={**query, **options.echo()},
                     took_ms=round((done - started) * 1000, 2), embed_ms=round((embedded - started) * 1000, 2),
                     search_ms=round((done - embedded) * 1000, 2), results=[result_out(r) for r in found],
                     partial=found.partial.to_json() if found.partial else None)


def search_router(ctx: WebContext) -> APIRouter:
    router = APIRouter()
    service = ctx.service

    def search_query(query: QueryIn, options: SearchOptions) -> SearchOut:
        started = time.perf_counter()
        terms = query.terms()
        vector = service.embed("text", query.q) if query.q else None
        out = run_search(service, vector, options, query.echo(), started, terms)
        out.hint = english_only_hint(query.q, service.spec.name) if query.q else None
        return out

    @router.get("/api/search", response_model=SearchOut,
                summary="Search by text, more like an item, or a combination (add, subtract)")
    def search_text(query: Annotated[QueryIn, Depends(query_params)], options: Options) -> SearchOut:
        return search_query(query, options)

    @router.post("/api/search", response_model=SearchOut, summary="The same search, its query as a JSON body")
    def search_body(query: QueryIn, options: Options) -> SearchOut:
        return search_query(query, options)

    @router.post("/api/search/file", response_model=SearchOut, summary="Search by an example image or sound")
    def search_file(file: Annotated[UploadFile, File(description="An image (JPEG, PNG, GIF, WebP, BMP, TIFF) "
                                                                 "or a sound (WAV, FLAC, OGG, MP3).")],
                    options: Options) -> SearchOut:
        started = time.perf_counter()
        vector, name, what = embed_upload(service, file, ctx.max_upload_bytes)
        return run_search(service, vector, options, {"file": name, "file_type": what}, started)

    return router


def embed_upload(service: SearchService, file: UploadFile, max_bytes: int) -> tuple[np.ndarray, str, str]:
    """The uploaded file's vector, its name and what it is ("image", "audio"), or the HTTP error
    saying why not (too large, empty, neither, not searchable here, undecodable, a full disk)."""
    data = file.file.read(max_bytes + 1)
    name = os.path.basename(file.filename or "upload")
    if len(data) > max_bytes:
        raise HTTPException(413, f"upload {name} is larger than {human_bytes(max_bytes)}")
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
                return service.embed(what, path), name, what
            except UnsupportedQuery as exc:
                raise HTTPException(415, str(exc)) from None
            except (MediaError, QueryError) as exc:  # about the upload: name it, not the temp file
                raise HTTPException(400, _without_server_paths(str(exc), path, name)) from None
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise HTTPException(507, "the server's disk is full, so it cannot take an upload now; "
                                 "searching by text still works") from None


def _without_server_paths(message: str, upload: Path, name: str) -> str:
    """`message` with the upload's temp file (in any spelling) replaced by the uploaded file's name."""
    for spelling in {str(upload), os.path.realpath(upload)}:
        message = message.replace(spelling, f"upload {name}")
    for folder in {str(upload.parent), os.path.realpath(upload.parent)}:
        message = message.replace(folder, "(upload)")
    return message
