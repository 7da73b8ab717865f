"""The registry of media kinds: one entry per handler module, in the order a run indexes kinds.

`indexer/handler.py` has the contract (`KindHandler`, `KindInfo`). The walk classifies files by
the registered extensions, the pipeline hands each kind's files to its handler, and the web page
asks `kind_info` how to show a kind. A kind from outside the package registers with `register_kind`.
"""

from __future__ import annotations

from jrsearch.indexer.audio import SOUNDS
from jrsearch.indexer.handler import KindHandler, KindInfo
from jrsearch.indexer.images import IMAGES
from jrsearch.indexer.texts import TEXTS
from jrsearch.indexer.video import VIDEOS

KIND_HANDLERS: dict[str, KindHandler] = {}


def register_kind(handler: KindHandler) -> KindHandler:
    """Add a kind; refuses a name or an extension another kind already has."""
    info = handler.info
    if info.name in KIND_HANDLERS:
        raise ValueError(f"a kind named {info.name!r} is already registered")
    taken = {ext for h in KIND_HANDLERS.values() for ext in h.info.extensions} & info.extensions
    if taken:
        raise ValueError(f"kind {info.name!r}: extensions {sorted(taken)} already belong to another kind")
    KIND_HANDLERS[str(info.name)] = handler
    return handler


def kind_info(name: str) -> KindInfo | None:
    """The facts of a registered kind, by name (None for a kind no handler registered)."""
    handler = KIND_HANDLERS.get(name)
    return handler.info if handler else None


def kind_of_suffix(suffix: str) -> KindInfo | None:
    """The kind a lower-case file suffix (".jpg") names, if any."""
    for handler in KIND_HANDLERS.values():
        if suffix in handler.info.extensions:
            return handler.info
    return None


for _handler in (IMAGES, TEXTS, VIDEOS, SOUNDS):
    register_kind(_handler)
