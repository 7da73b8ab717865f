"""The entry-point registries (retrieval/plugins.py): shipped names never scan other distributions,
an unknown name scans once, a broken plugin is skipped with a warning, the cold path stays lean."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jrsearch.indexer import kinds
from jrsearch.indexer.images import IMAGES
from jrsearch.retrieval import plugins
from jrsearch.retrieval.plugins import KINDS_GROUP, EntryPoint, PluginRegistry, parse_entry_points


def _kinds_registry() -> PluginRegistry:
    return PluginRegistry(KINDS_GROUP, kinds._accept, order=("image", "text", "video", "audio"))


def test_entry_points_txt_is_read_in_file_order_without_extras():
    text = "[a]\nx = m.n:o.p [extra]\n; a comment\n\n[b]\ny=q\nz = r:s\n"
    assert parse_entry_points(text, "d") == {"a": [EntryPoint("x", "m.n:o.p", "a", "d")],
                                             "b": [EntryPoint("y", "q", "b", "d"), EntryPoint("z", "r:s", "b", "d")]}


def test_shipped_names_are_answered_without_a_scan_and_others_scan_once(monkeypatch):
    scans: list[str] = []
    monkeypatch.setattr(plugins, "outside_entry_points", lambda group: scans.append(group) or [])
    registry = _kinds_registry()
    assert registry["image"] is IMAGES and "video" in registry and registry.get("audio") is not None
    assert list(registry.shipped()) == ["image", "text", "video", "audio"] and scans == []
    assert "note" not in registry and scans == [KINDS_GROUP]
    assert list(registry) == ["image", "text", "video", "audio"] and len(registry) == 4
    assert scans == [KINDS_GROUP]  # once per registry


def test_an_outside_plugin_that_breaks_or_claims_a_taken_name_is_skipped_with_a_warning(monkeypatch):
    outside = [EntryPoint("broken", "no_such_module_for_jrsearch:X", KINDS_GROUP, "broken-plugin"),
               EntryPoint("image", "jrsearch.indexer.images:IMAGES", KINDS_GROUP, "copycat"),
               EntryPoint("text2", "jrsearch.indexer.texts:TEXTS", KINDS_GROUP, "misnamed")]
    monkeypatch.setattr(plugins, "outside_entry_points", lambda group: outside)
    registry = _kinds_registry()
    with pytest.warns(RuntimeWarning) as caught:
        assert list(registry) == ["image", "text", "video", "audio"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3 and "broken-plugin" in messages[0] and "already registered" in messages[1]
    assert "names the kind 'text'" in messages[2]


def test_the_cli_and_a_shipped_kind_need_no_metadata_scan_nor_the_kind_registry():
    probe = ("import sys\n"
             "from jrsearch.cli import main\n"
             "from jrsearch.cli.common import known_kind\n"
             "assert known_kind('audio') == 'audio'\n"
             "assert list(main.COMMANDS.shipped()) == "
             "['serve', 'bench', 'train', 'cluster', 'check', 'duplicates', 'models']\n"
             "print(sorted(m for m in ('importlib.metadata', 'jrsearch.indexer.kinds') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
