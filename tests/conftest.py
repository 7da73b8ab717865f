"""Fixtures only (helpers shared by test files are in tests/helpers.py): offline, a fresh model
cache, the tiny model loaded once, a folder of images."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may wait on the network
if "JRSEARCH_CACHE" not in os.environ:  # model exports go to a fresh cache, never the user's
    import atexit
    import functools
    import shutil
    import tempfile

    os.environ["JRSEARCH_CACHE"] = tempfile.mkdtemp(prefix="jrsearch-test-cache-")
    # ~460 MB of exports a run: left behind, a few dozen runs fill a CI machine's disk
    atexit.register(functools.partial(shutil.rmtree, os.environ["JRSEARCH_CACHE"], ignore_errors=True))

from pathlib import Path

import pytest
from helpers import make_image


@pytest.fixture(scope="session")
def tiny_encoder():
    """The tiny model in torch (tests reach into `.model`); `tiny_onnx_encoder` is the ORT one."""
    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder

    return load_encoder(TINY_TEST_MODEL, device="cpu", backend="torch")


@pytest.fixture(scope="session")
def tiny_onnx_encoder():
    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder

    encoder = load_encoder(TINY_TEST_MODEL, backend="onnx")
    assert encoder.backend == "onnx", encoder.notes
    return encoder


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i in range(12):
        make_image(root / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.jpg", seed=i)
    return root
