"""A command whose optional extra is missing says, in one line, which pip command installs it."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from jrsearch.cli.main import app
from jrsearch.retrieval.extras import install_hint


@pytest.mark.parametrize("module", ["uvicorn", "fastapi"])
def test_serve_without_the_serve_extra_names_the_pip_command(tmp_path, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    result = CliRunner().invoke(app, ["serve", "--library", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: jrsearch serve needs {module}, which is not installed: {install_hint('serve')}"]


def test_train_without_the_train_extra_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(app, ["train", "audio", str(tmp_path), "--out", str(tmp_path / "t.pt"),
                                      "--model", "tiny-test"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: jrsearch train audio (its loss curve) needs matplotlib, which is not installed: "
        f"{install_hint('train')}"]
    assert not (tmp_path / "t.pt").exists()


def test_the_install_hint_names_this_checkout_where_jrsearch_runs_from_one(monkeypatch, tmp_path):
    from jrsearch.retrieval import extras

    assert install_hint("torch") == f"pip install -e '{extras.CHECKOUT}[torch]'"  # the tests run from a checkout
    monkeypatch.setattr(extras, "CHECKOUT", tmp_path)  # an installed wheel: no pyproject.toml above the package
    assert install_hint("torch") == "pip install 'jrsearch[torch]'"


def test_index_without_faiss_says_so_before_embedding_anything(tmp_path, monkeypatch):
    from helpers import make_image

    monkeypatch.setitem(sys.modules, "faiss", None)
    result = CliRunner().invoke(app, ["index", str(make_image(tmp_path / "a.png", 0)), "--library",
                                      str(tmp_path / "lib"), "--model", "tiny-test"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: vector search needs faiss, which is not installed: pip install 'faiss-cpu>=1.8,<2' "
        "(or faiss-gpu-cu12 instead, on a CUDA 12 machine)"]
    assert not (tmp_path / "lib").exists()


def test_train_without_torch_names_the_train_extra_first(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    result = CliRunner().invoke(app, ["train", "audio", str(tmp_path), "--out", str(tmp_path / "t.pt"),
                                      "--model", "tiny-test"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: jrsearch train audio needs torch, which is not installed: {install_hint('train')}"]
