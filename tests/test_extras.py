"""A command whose optional extra is missing says, in one line, which pip command installs it."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from jrsearch.cli.main import app


@pytest.mark.parametrize("module", ["uvicorn", "fastapi"])
def test_serve_without_the_serve_extra_names_the_pip_command(tmp_path, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    result = CliRunner().invoke(app, ["serve", "--library", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: jrsearch serve needs {module}, which is not installed: pip install 'jrsearch[serve]'"]


def test_train_without_the_train_extra_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(app, ["train", "audio", str(tmp_path), "--out", str(tmp_path / "t.pt"),
                                      "--model", "tiny-test"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: jrsearch train audio (its loss curve) needs matplotlib, which is not installed: "
        "pip install 'jrsearch[train]'"]
    assert not (tmp_path / "t.pt").exists()
