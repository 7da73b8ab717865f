"""Where a library lives on disk. Kept free of heavy imports: the cold query path reads it too."""

from __future__ import annotations

import os
from pathlib import Path

DB_NAME = "library.db"


def default_library_dir() -> Path:
    """JRSEARCH_LIBRARY, else the user's data dir (platformdirs)."""
    env = os.environ.get("JRSEARCH_LIBRARY")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("jrsearch", appauthor=False) / "library"
