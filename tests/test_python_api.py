"""The public Python API (README "Python API"): `jrsearch.open`, `SearchRequest`, the service's results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_image
from typer.testing import CliRunner

from jrsearch.cli.main import app

EXAMPLE = """\
import jrsearch
s = jrsearch.open(LIBRARY)
v = s.embed("text", "a dog on a beach")
results = s.search(v, jrsearch.SearchRequest(top_k=10))
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("api")
    for i in range(6):
        make_image(base / "photos" / f"img{i}.jpg", seed=i)
    (base / "caps.txt").write_text("a dog on a beach\na red car\nblue sky over the sea\n")
    ran = CliRunner().invoke(app, ["index", str(base / "photos"), str(base / "caps.txt"), "--model", "tiny-test",
                                   "--library", str(base / "lib")])
    assert ran.exit_code == 0, ran.output
    return base / "lib"


def test_the_readme_example_finds_what_the_cli_finds_without_torch(library):
    probe = EXAMPLE.replace("LIBRARY", repr(str(library))) + (
        "import sys, json\n"
        "print(json.dumps({'results': [{'path': r.path, 'score': r.score, 'kind': r.kind} for r in results],\n"
        "                  'partial': results.partial, 'torch': 'torch' in sys.modules}))\n")
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    got = json.loads(ran.stdout)
    assert not got["torch"] and got["partial"] is None  # the exported numpy text tower embedded the text
    cli = json.loads(CliRunner().invoke(app, ["query", "a dog on a beach", "--json", "--library", str(library),
                                              "--device", "cpu"]).stdout)  # the model itself, not the export
    assert len(got["results"]) == 6 and {r["kind"] for r in got["results"]} == {"image"}
    assert [r["path"] for r in got["results"]] == [r["path"] for r in cli]
    assert [r["score"] for r in got["results"]] == pytest.approx([r["score"] for r in cli], abs=1e-4)


def test_a_request_picks_the_kind_and_filters(library):
    import jrsearch

    s = jrsearch.open(library)
    try:
        assert s.modalities() == ("text", "image")
        v = s.embed("text", "a dog on a beach")
        texts = s.search(v, jrsearch.SearchRequest(kind="text", top_k=2))
        assert len(texts) == 2 and texts[0].kind == "text" and texts[0].text == "a dog on a beach"
        only = s.search(v, jrsearch.SearchRequest(top_k=10, filters=jrsearch.Filters.make(glob="img3*")))
        assert [Path(r.path).name for r in only] == ["img3.jpg"]
        assert s.item(only[0].item_id).path == only[0].path
        assert s.status()["model"] == "tiny-test"
    finally:
        s.close()


def test_importing_jrsearch_imports_nothing_else():
    probe = "import sys, jrsearch\nprint(sorted(m for m in sys.modules if m.startswith('jrsearch.')))"
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "[]"
