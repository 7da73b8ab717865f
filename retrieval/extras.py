"""Optional dependencies: import a module that an extra installs, or say in one line how to get it."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from jrsearch.retrieval.errors import MissingExtraError

CHECKOUT = Path(__file__).resolve().parent.parent  # a source checkout (an editable install) has pyproject.toml here


def install_hint(extra: str) -> str:
    """The pip command that adds `extra`: from PyPI, or from this checkout where jrsearch runs from one."""
    if (CHECKOUT / "pyproject.toml").is_file():
        return f"pip install -e '{CHECKOUT}[{extra}]'"
    return f"pip install 'jrsearch[{extra}]'"


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (None in sys.modules counts as absent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str, purpose: str, install: str | None = None) -> ModuleType:
    """Import `module`, or raise `MissingExtraError` naming the pip command that installs `extra`
    (or `install`, for a base dependency that went missing)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{purpose} needs {module}, which is not installed: "
                                f"{install or install_hint(extra)}") from None
