"""`/api/items/{id}`: an item's metadata, thumbnail and file (with HTTP ranges)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel

from jrsearch.cli.web.media import file_response, open_item, refuse_failed
from jrsearch.cli.web.models import ItemOut, item_out
from jrsearch.cli.web.routes import WebContext
from jrsearch.cli.web.thumbnails import SIZES, NoPicture, picture_of
from jrsearch.retrieval.catalog import ItemRecord
from jrsearch.retrieval.errors import MediaError
from jrsearch.retrieval.walk_record import recorded_roots

MAX_ITEM_ID = 2**63 - 1  # SQLite's INTEGER PRIMARY KEY is a signed 64-bit integer
ItemId = Annotated[int, PathParam(ge=1, le=MAX_ITEM_ID, description="An item id (from a search result).")]


def items_router(ctx: WebContext) -> APIRouter:
    router = APIRouter()

    def get_item(item_id: int) -> ItemRecord:
        item = ctx.service.item(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id} in this library")
        return item

    @router.get("/api/items/{item_id}", response_model=ItemOut, summary="One item's metadata")
    def item_metadata(item_id: ItemId) -> BaseModel:
        return item_out(get_item(item_id))

    @router.get("/api/items/{item_id}/thumbnail",
                summary="A JPEG thumbnail (images; videos at time t; sounds' spectrogram from t to until)",
                response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def item_thumbnail(item_id: ItemId, size: Annotated[int, Query(description=f"One of {SIZES}.")] = 256,
                       t: Annotated[float | None, Query(ge=0, le=10**7, description="Video time, or where a "
                                                                                   "sound's range starts, s.")] = None,
                       until: Annotated[float | None, Query(ge=0, le=10**7, description="Where a sound's range "
                                                                                       "ends, seconds.")] = None
                       ) -> Response:
        if size not in SIZES:
            raise HTTPException(422, f"size must be one of {', '.join(map(str, SIZES))}")
        item = get_item(item_id)
        refuse_failed(item)
        if picture_of(item.kind) is None:
            raise HTTPException(404, f"item {item_id} is {item.kind}: only images and videos have thumbnails "
                                     f"(and sounds, their spectrogram)")
        try:
            jpeg = ctx.thumbnails.get(item, size, lambda: open_item(item, recorded_roots(ctx.service.root)).handle,
                                      t, until)
        except NoPicture as exc:
            raise HTTPException(404, f"item {item_id} has no thumbnail: {exc.reason}") from None
        except MediaError as exc:
            raise HTTPException(415, f"item {item_id}: no thumbnail: {exc.reason}") from None
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @router.get("/api/items/{item_id}/media", summary="The item's file, with HTTP range requests",
                response_class=Response)
    def item_media(item_id: ItemId, request: Request) -> Response:
        opened = open_item(get_item(item_id), recorded_roots(ctx.service.root))
        return file_response(opened, request.headers.get("range"))

    return router
