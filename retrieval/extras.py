"""Optional dependencies: import a module that an extra installs, or say in one line how to get it."""

from __future__ import annotations

import importlib
from types import ModuleType

from jrsearch.retrieval.errors import MissingExtraError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise `MissingExtraError` naming the pip command that installs `extra`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{purpose} needs {module}, which is not installed: "
                                f"pip install 'jrsearch[{extra}]'") from None
