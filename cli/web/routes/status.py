"""The page, `/api/login`, `/api/status` (what is searched, and how this server runs) and
`/api/kinds` (what the page's kind menu offers: every registered kind, plugins' included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, JSONResponse, Response

from jrsearch.cli.web.models import Login
from jrsearch.cli.web.routes import MAX_TOP_K, WebContext
from jrsearch.indexer.kinds import KIND_HANDLERS

STATIC_DIR = Path(__file__).parent.parent / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; script-src 'self'; "
            "style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def status_router(ctx: WebContext) -> APIRouter:
    router = APIRouter()
    service, guard = ctx.service, ctx.guard

    @router.get("/", include_in_schema=False)
    def page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP,
                                                                 "Cache-Control": "no-cache"})

    @router.post("/api/login", summary="Exchange the token for a cookie (for the page)")
    def login(body: Login) -> JSONResponse:
        if guard is None:
            return JSONResponse({"ok": True, "token_required": False})
        if not guard.valid(body.token):
            raise HTTPException(401, "wrong token")
        response = JSONResponse({"ok": True, "token_required": True})
        guard.set_cookie(response)
        return response

    @router.get("/api/status", summary="What the library holds and what the server runs")
    def status() -> dict[str, Any]:
        info = service.status()
        info["server"] = {"model": service.spec.label(), "token_required": guard is not None,
                          "max_upload_bytes": ctx.max_upload_bytes, "max_top_k": MAX_TOP_K,
                          "audio_search": "audio" in service.modalities(), "text_encoder": service.text_encoder}
        return info

    @router.get("/api/kinds", summary="The kinds a search can ask for (the `kind` parameter)")
    def kinds() -> dict[str, list[str]]:
        return {"kinds": list(KIND_HANDLERS)}

    return router
