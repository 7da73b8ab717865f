"""What every fresh-process timing assumes: jrsearch's own modules are byte-compiled already, as
after `pip install` or after any earlier run. An editable install run with PYTHONDONTWRITEBYTECODE=1
(as on this project's test machines) never writes them, so each timed process would first compile
jrsearch's ~100 modules from source, which no user pays twice."""

from __future__ import annotations

import compileall
import importlib

PACKAGES = ("jrsearch.retrieval", "jrsearch.indexer", "jrsearch.cli")


def byte_compile_jrsearch() -> None:
    """Write the `__pycache__` of jrsearch's packages (a no-op where they are current)."""
    for name in PACKAGES:
        for folder in importlib.import_module(name).__path__:
            compileall.compile_dir(folder, quiet=1)
