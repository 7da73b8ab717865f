"""Shared fixtures: offline, the tiny model loaded once, images the tests make themselves."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may wait on the network
if "JRSEARCH_CACHE" not in os.environ:  # model exports go to a fresh cache, never the user's
    import tempfile

    os.environ["JRSEARCH_CACHE"] = tempfile.mkdtemp(prefix="jrsearch-test-cache-")

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COCO_DIR = SHARED_DATA / "coco-karpathy-test"
FSDD_DIR = SHARED_DATA / "fsdd" / "recordings"


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


def make_image(path: Path, seed: int, size=(96, 64), mode: str = "RGB", fmt: str | None = None) -> Path:
    """A distinct random-pattern image per seed (blocky, so it survives the model's resize)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    array = np.kron(blocks, np.ones((size[1] // 4, size[0] // 6, 1), dtype=np.uint8))
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i in range(12):
        make_image(root / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.jpg", seed=i)
    return root


def require_coco_images() -> Path:
    images = COCO_DIR / "images"
    if not images.is_dir():
        pytest.skip(f"real COCO images not found at {images} (the shared data folder is absent)")
    return images
