"""A model name or tag that does not exist is one line with close matches, at once and before any
folder is made; a model whose first use needs torch says which extra when torch is missing; the
first use of a model says what it does, on stderr."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest
from helpers import jrsearch, make_image

from jrsearch.retrieval.model_check import NAMES_FILE

# The CLI in a fresh process, reporting what it imported (the check must not need torch).
PROBE = """
import sys
from typer.testing import CliRunner
from jrsearch.cli.main import app
result = CliRunner().invoke(app, sys.argv[1:])
sys.stderr.write(result.stderr)
sys.stderr.write("imported: " + ",".join(m for m in ("torch", "open_clip") if sys.modules.get(m)) + "\\n")
sys.exit(result.exit_code)
"""


@pytest.mark.parametrize(("args", "line"), [
    (["--model", "vit-b-32"], "error: unknown model 'vit-b-32'; did you mean ViT-B-32 or ViT-S-32 or ViT-M-32 or "
                              "ViT-B-32-256? (or --model tiny-test, or a folder of ONNX towers such as "
                              "immich-app/ViT-B-32__openai)"),
    (["--model", "vit-b-32", "--pretrained", "none"], "error: unknown model 'vit-b-32'; did you mean ViT-B-32 or "
                                                      "ViT-S-32 or ViT-M-32 or ViT-B-32-256? (or --model tiny-test, "
                                                      "or a folder of ONNX towers such as "
                                                      "immich-app/ViT-B-32__openai)"),
    (["--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b7k"],
     "error: unknown pretrained tag 'laion2b_s34b_b7k' for ViT-B-32; did you mean laion2b_s34b_b79k or "
     "laion2b_e16 or commonpool_s_laion_s13m_b4k? (or --pretrained none for random weights)"),
])
def test_an_unknown_model_or_tag_is_one_line_before_any_folder_and_without_torch(tmp_path, args, line):
    photo = make_image(tmp_path / "a.png", 0)
    library = tmp_path / "lib"
    ran = subprocess.run([sys.executable, "-c", PROBE, "index", str(photo), "--library", str(library), *args],
                         capture_output=True, text=True)
    assert ran.returncode == 1
    assert ran.stderr.splitlines() == [line, "imported: "]
    assert not library.exists()


def test_query_names_the_unknown_model_too(tmp_path):
    result = jrsearch("query", "a dog", "--model", "tiny_test", lib=tmp_path / "lib", ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown model 'tiny_test'; did you mean tiny-test")
    assert not (tmp_path / "lib").exists()


def test_the_kept_names_are_the_installed_open_clip_s():
    import open_clip

    kept = json.loads(NAMES_FILE.read_text())
    assert kept["open_clip"] == open_clip.__version__, "regenerate open_clip_names.json (see model_check.py)"
    pairs = {(name, tag) for name, tags in kept["models"].items() for tag in tags}
    assert pairs == set(open_clip.list_pretrained())


def test_a_first_export_without_torch_names_the_extra_before_indexing(tmp_path):
    photo = make_image(tmp_path / "a.png", 0)
    blocker = "import sys\nfor m in ('torch', 'torchvision', 'open_clip'):\n    sys.modules[m] = None\n"
    ran = subprocess.run([sys.executable, "-c", blocker + PROBE, "index", str(photo), "--library",
                          str(tmp_path / "lib"), "--model", "tiny-test"], capture_output=True, text=True,
                         env={**os.environ, "JRSEARCH_CACHE": str(tmp_path / "empty-cache")})
    assert ran.returncode == 1
    from jrsearch.retrieval.extras import install_hint

    assert ran.stderr.splitlines() == [
        "error: the first use of tiny-test on this machine (its one-time export to ONNX) needs torch and open_clip, "
        f"which are not installed: {install_hint('torch')}; or use pre-exported ONNX towers "
        "(--model immich-app/ViT-B-32__openai or --model DIR)", "imported: "]
    assert not (tmp_path / "empty-cache").exists()  # nothing exported, nothing embedded
    assert not (tmp_path / "lib").exists()  # and no empty library left behind


def test_the_first_use_of_a_model_says_what_it_does_on_stderr(tmp_path, monkeypatch, tiny_onnx_encoder):
    """The export itself takes ~45 s for tiny-test: here it is the export already made, reached
    through the first-use path (a cache that does not know the model yet)."""
    from jrsearch.retrieval import model_cache
    from jrsearch.retrieval.encoders import backend

    exports = []

    def export(spec, precision, runtime, damage=None):
        exports.append(spec.name)
        return tiny_onnx_encoder

    monkeypatch.setattr(model_cache, "find", lambda spec: None)
    monkeypatch.setattr(backend, "_export", export)
    photos = tmp_path / "photos"
    make_image(photos / "a.png", 0)
    result = jrsearch("index", str(photos), "--model", "tiny-test", "--json", lib=tmp_path / "lib")
    assert exports == ["tiny-test"]
    assert json.loads(result.stdout)["indexed"] == 1  # stdout is the JSON alone
    lines = [line for line in result.stderr.splitlines() if "tiny-test" in line]
    assert lines[0] == "first use of tiny-test on this machine: exporting it for this CPU, once (about a minute)..."
    assert lines[-1].startswith("tiny-test is ready for this machine (")


def test_without_an_announcer_the_first_use_shows_nothing(capsys):
    from jrsearch.retrieval.first_use import first_use, set_announcer

    seen = []

    @contextlib.contextmanager
    def announce(label):
        seen.append(label)
        yield

    set_announcer(announce)
    with first_use("m"):
        pass
    set_announcer(None)
    with first_use("n"):
        pass
    assert seen == ["m"]
    assert capsys.readouterr() == ("", "")
