"""`jrsearch query --preview`: result thumbnails inline, in terminals that speak the kitty or the
iTerm2 image protocol (told by their environment variables, `retrieval/settings.py`), as rclip does.
Thumbnails are the server's (`cli/web/thumbnails.ThumbnailCache`, the same cache folder)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import BinaryIO

import typer

from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.paths import display_path
from jrsearch.retrieval.service import SearchService
from jrsearch.retrieval.settings import KITTY_WINDOW_ID, LC_TERMINAL, TERM, TERM_PROGRAM
from jrsearch.retrieval.types import SearchResult

KITTY, ITERM2 = "kitty", "iterm2"
PREVIEW_SIZE = 256  # pixels, the longer side (one of the thumbnail cache's sizes)
KITTY_CHUNK = 4096  # base64 characters per escape, as the kitty protocol requires
CANNOT = ("note: --preview needs a terminal that shows images (kitty, or iTerm2 and others that speak its "
          "protocol, such as WezTerm); this one does not say it can, so only paths are shown")


def terminal_protocol() -> str | None:
    """KITTY, ITERM2, or None where the environment does not name a terminal that shows images."""
    if KITTY_WINDOW_ID.text() or "kitty" in TERM.text():
        return KITTY
    if TERM_PROGRAM.text() in ("iTerm.app", "WezTerm") or LC_TERMINAL.text() == "iTerm2":
        return ITERM2
    return None


def image_escape(png: bytes, protocol: str) -> str:
    """The escape sequence that shows the PNG `png` at the cursor under `protocol`."""
    data = base64.standard_b64encode(png).decode("ascii")
    if protocol == ITERM2:
        return f"\x1b]1337;File=inline=1;size={len(png)};preserveAspectRatio=1:{data}\x07"
    chunks = [data[i:i + KITTY_CHUNK] for i in range(0, len(data), KITTY_CHUNK)] or [""]
    out = []
    for i, chunk in enumerate(chunks):
        keys = "a=T,f=100," if i == 0 else ""
        out.append(f"\x1b_G{keys}m={int(i < len(chunks) - 1)};{chunk}\x1b\\")
    return "".join(out)


def print_previews(service: SearchService, results: Sequence[SearchResult]) -> None:
    """Each pictured result's thumbnail under its rank and path; one line where the terminal cannot."""
    protocol = terminal_protocol()
    if protocol is None:
        typer.echo(CANNOT, err=True)
        return
    from jrsearch.cli.web.thumbnails import ThumbnailCache, picture_of

    cache = ThumbnailCache(service.root / "thumbnails")
    for result in results:
        if picture_of(result.kind) is None:
            continue
        item = service.item(result.item_id)
        if item is None:
            continue
        typer.echo(f"#{result.rank} {display_path(result.path)}")
        try:
            jpeg = cache.get(item, PREVIEW_SIZE, _opener(item.path), result.start_s)
        except (JrsearchError, OSError) as exc:
            typer.echo(f"  (no preview: {exc})")
            continue
        typer.echo(image_escape(_png(jpeg), protocol))


def _opener(path: str) -> Callable[[], BinaryIO]:
    """What `ThumbnailCache.get` opens (and closes) when the thumbnail is not cached yet."""
    return lambda: open(path, "rb")


def _png(jpeg: bytes) -> bytes:
    """The kitty protocol's direct format is PNG (f=100); iTerm2 takes it too."""
    from PIL import Image

    out = io.BytesIO()
    with Image.open(io.BytesIO(jpeg)) as image:
        image.save(out, format="PNG")
    return out.getvalue()
