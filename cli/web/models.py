"""The web API's bodies. A result and an item are the records the services return (`SearchResult`,
`ItemRecord`), serialised once (`SearchResult.to_json`, `types.record_json`); their models here are
built from the records' fields, plus the links the page follows (`name`, `thumbnail`, `media`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, get_type_hints

from pydantic import BaseModel, create_model

from jrsearch.cli.web.thumbnails import picture_of
from jrsearch.indexer.handler import Picture
from jrsearch.retrieval.catalog import ItemRecord
from jrsearch.retrieval.paths import display_path
from jrsearch.retrieval.types import JSON_SKIPPED, SearchResult, record_json

LINKS: dict[str, Any] = {"name": (str, ...), "thumbnail": (str | None, None), "media": (str, ...)}
# The shipped kinds' own fields (`ItemRecord.details`), always in an item's JSON (null where unset).
SHIPPED_DETAILS: dict[str, Any] = {"width": (int | None, None), "height": (int | None, None),
                                   "duration_s": (float | None, None)}


def record_model(name: str, record: type, details: dict[str, Any] | None = None, **as_json: Any) -> type[BaseModel]:
    """A pydantic model with the fields of a record dataclass as `record_json` writes them (types as
    `as_json` says where JSON holds another type, e.g. a time as a string; a `details` mapping's
    keys at the top level, as `details` lists them), plus `LINKS`."""
    hints = get_type_hints(record)
    found: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name in JSON_SKIPPED:
            continue
        default = f.default if f.default is not dataclasses.MISSING else ...
        found[f.name] = (as_json.get(f.name, hints[f.name]), default)
    return create_model(name, **found, **(details or {}), **LINKS)


ResultOut = record_model("ResultOut", SearchResult, kind=str)
ItemOut = record_model("ItemOut", ItemRecord, details=SHIPPED_DETAILS, kind=str, status=str, indexed_at=str)


class SearchOut(BaseModel):
    query: dict[str, Any]
    took_ms: float  # embed_ms (the query's vector) + search_ms (index, store, filters)
    embed_ms: float
    search_ms: float
    results: list[ResultOut]  # type: ignore[valid-type]
    partial: dict[str, Any] | None = None  # an INDEXDIR served with --allow-partial: shards that did not answer
    hint: str | None = None  # e.g. a query in another script on an English-only model's library


class Login(BaseModel):
    token: str


def thumbnail_url(item_id: int, kind: str, at_s: float | None = None, until_s: float | None = None) -> str | None:
    picture = picture_of(kind)
    if picture is None:
        return None
    at = f"&t={at_s:.1f}" if picture in (Picture.FRAME, Picture.SOUND) and at_s else ""
    until = f"&until={until_s:.1f}" if picture is Picture.SOUND and until_s is not None else ""
    return f"/api/items/{item_id}/thumbnail?size=256{at}{until}"


def links(item_id: int, path: str, kind: str, at_s: float | None = None,
          until_s: float | None = None) -> dict[str, Any]:
    return {"name": display_path(os.path.basename(path)), "thumbnail": thumbnail_url(item_id, kind, at_s, until_s),
            "media": f"/api/items/{item_id}/media"}


def result_out(r: SearchResult) -> BaseModel:
    return ResultOut(**r.to_json(nulls=True), **links(r.item_id, r.path, r.kind, r.start_s, r.end_s))


def item_out(item: ItemRecord) -> BaseModel:
    return ItemOut(**record_json(item), **links(item.id, item.path, item.kind))
