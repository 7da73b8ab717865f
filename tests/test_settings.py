"""Every environment variable jrsearch reads is in the settings registry, and the README names it."""

from __future__ import annotations

import re
from pathlib import Path

from jrsearch.retrieval.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("retrieval", "indexer", "cli", "jrsearch")


def _readme_settings() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Settings\n(.*?)^## ", readme, re.S | re.M)
    assert section, "README.md has no '## Settings' section"
    return section.group(1)


def test_the_readme_documents_every_setting_with_its_default():
    table = _readme_settings()
    for setting in SETTINGS:
        row = next((line for line in table.splitlines() if line.startswith(f"| `{setting.name}` |")), None)
        assert row is not None, f"README's Settings table has no row for {setting.name}"
        assert len(row.split("|")) == 5 and all(cell.strip() for cell in row.split("|")[1:4]), row
    named = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M))
    assert named == {s.name for s in SETTINGS}, "README lists a variable the registry does not"


def test_no_module_reads_the_environment_but_the_registry():
    registry = ROOT / "retrieval" / "settings.py"
    readers = [f"{path.relative_to(ROOT)}:{n}" for folder in SOURCES for path in sorted((ROOT / folder).rglob("*.py"))
               if path != registry
               for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"\benviron\b|\bgetenv\b", line)]
    assert readers == [], "read environment variables through retrieval/settings.py: " + ", ".join(readers)


def test_settings_are_distinct_and_described():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert all(s.default and s.meaning for s in SETTINGS)
