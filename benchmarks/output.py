"""How a benchmark reports: its result printed as JSON and saved as FOLDER/NAME.json."""

from __future__ import annotations

import json
from pathlib import Path


def print_and_save(result: dict, folder: Path, name: str) -> Path:
    """Print `result` as indented JSON and write the same text to `folder/name.json`."""
    text = json.dumps(result, indent=2)
    print(text)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.json"
    out.write_text(text)
    print(f"saved {out}")
    return out
