"""The registry of media kinds: one entry per handler, in the order a run indexes kinds.

`indexer/handler.py` has the contract (`KindHandler`, `KindInfo`). The walk classifies files by
the registered extensions, the pipeline hands each kind's files to its handler, and the web page
asks `kind_info` how to show a kind. Kinds come from the `jrsearch.kinds` entry points
(`retrieval/plugins.py`): the four shipped handlers are declared in jrsearch's own `pyproject.toml`,
a plugin distribution declares its own, and code may call `register_kind` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from jrsearch.indexer.handler import KindHandler, KindInfo
from jrsearch.retrieval.plugins import KINDS_GROUP, PluginRegistry
from jrsearch.retrieval.types import MediaKind


def _accept(name: str, handler: object, registered: Mapping[str, KindHandler]) -> KindHandler:
    """`handler` if it is a handler named `name` whose name and extensions no other kind has."""
    info = getattr(handler, "info", None)
    if not isinstance(info, KindInfo) or not callable(getattr(handler, "index", None)):
        raise TypeError(f"kind {name!r}: {handler!r} is not a KindHandler (an `info: KindInfo` and `index`)")
    if str(info.name) != name:
        raise ValueError(f"kind {name!r}: its handler's info names the kind {str(info.name)!r}")
    if name in registered:
        raise ValueError(f"a kind named {name!r} is already registered")
    taken = {ext for h in registered.values() for ext in h.info.extensions} & info.extensions
    if taken:
        raise ValueError(f"kind {name!r}: extensions {sorted(taken)} already belong to another kind")
    return cast(KindHandler, handler)


KIND_HANDLERS: PluginRegistry[KindHandler] = PluginRegistry(KINDS_GROUP, _accept, order=tuple(map(str, MediaKind)))


def register_kind(handler: KindHandler) -> KindHandler:
    """Add a kind; refuses a name or an extension another kind already has."""
    return KIND_HANDLERS.register(str(handler.info.name), handler)


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
