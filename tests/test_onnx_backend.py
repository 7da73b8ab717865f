"""ONNX Runtime encoders: same preprocessing and vectors as torch, shared exports, safe fallbacks,
and no model at all when a run has nothing to embed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image
from PIL import Image

CPU_RUNTIMES = ("onnx", "openvino")  # `--backend auto` takes whichever `tuning` measured faster
REPO = Path(__file__).resolve().parents[1]


def _image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    rgba = Image.fromarray(pixels, "RGBA")
    return rgba if mode == "RGBA" else rgba.convert("RGB").convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "I;16"])
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (3, 2), (1, 1), (1000, 31), (31, 1000), (64, 64)])
def test_numpy_preprocessing_equals_open_clip_transform(mode, size):
    import open_clip

    from jrsearch.retrieval.encoders.preprocess import ImagePreprocess

    image = _image(mode, size, seed=size[0] * 7 + size[1])
    for cfg in ({"size": 224}, {"size": 256, "interpolation": "bilinear", "mean": (0.5,), "std": (0.5,)},
                {"size": (160, 224)}, {"size": 96, "resize_mode": "squash"},
                {"size": 112, "resize_mode": "longest", "fill_color": 127}):
        expected = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg.get("mean"), std=cfg.get("std"),
                                             resize_mode=cfg.get("resize_mode"), interpolation=cfg.get("interpolation"),
                                             fill_color=cfg.get("fill_color", 0))(image).numpy()
        got = ImagePreprocess.from_cfg(cfg)(image)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.array_equal(got, expected), (cfg, float(np.abs(got - expected).max()))


def test_onnx_and_torch_vectors_are_interchangeable(tiny_encoder, tiny_onnx_encoder, photos):
    from jrsearch.retrieval.imageio import open_image

    assert tiny_onnx_encoder.backend == "onnx" and tiny_encoder.backend == "torch"
    images = [open_image(p) for p in sorted(photos.rglob("*.jpg"))] + [_image("RGB", (300, 40), 1)]
    inputs = [tiny_onnx_encoder.preprocess(i) for i in images]
    assert all(np.array_equal(a, tiny_encoder.preprocess(i)) for a, i in zip(inputs, images, strict=True))
    onnx, torch = tiny_onnx_encoder.encode_images(inputs), tiny_encoder.encode_images(inputs)
    assert onnx.shape == torch.shape == (len(images), tiny_encoder.dim) and onnx.dtype == np.float32
    assert np.sum(onnx * torch, axis=1).min() >= 0.9999
    texts = ["a dog on a beach", "", "x " * 100, "café crème at 5 o'clock"]
    cos = np.sum(tiny_onnx_encoder.encode_texts(texts) * tiny_encoder.encode_texts(texts), axis=1)
    assert cos.min() >= 0.9999
    assert tiny_onnx_encoder.encode_images([]).shape == (0, tiny_encoder.dim)


def test_a_cached_export_opens_without_torch(tiny_onnx_encoder):
    probe = ("import sys\nfrom jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder\n"
             "e = load_encoder(TINY_TEST_MODEL)\nv = e.encode_texts(['a dog'])\n"
             "print(e.backend, 'torch' in sys.modules, 'open_clip' in sys.modules, v.shape[1])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    backend, *rest = out.stdout.split()
    assert backend in CPU_RUNTIMES and rest == ["False", "False", str(tiny_onnx_encoder.dim)]


def test_libraries_indexed_with_one_backend_are_queried_with_the_other(tmp_path, photos, tiny_encoder,
                                                                        tiny_onnx_encoder):
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.library import Library

    paths = sorted(photos.rglob("*.jpg"))
    for built, asked in ((tiny_encoder, tiny_onnx_encoder), (tiny_onnx_encoder, tiny_encoder)):
        library = Library.open(tmp_path / built.backend, create=True)
        assert run_index(library, built, [photos]).indexed == len(paths)
        engine = SearchEngine(library, encoder=asked)
        for path in paths:
            hit = engine.search(engine.embed("image", path), top_k=1)[0]
            assert hit.path == str(path) and hit.score >= 0.9999
        library.close()


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    probe = ("import sys, json\nfrom jrsearch.cli.main import app\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
             "loaded = sorted(m for m in ('torch', 'open_clip', 'onnxruntime', 'openvino') if m in sys.modules)\n"
             "print(json.dumps(loaded), file=sys.stderr)")
    return subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, check=True)


@pytest.mark.slow
def test_a_rerun_with_nothing_to_embed_opens_no_model(tmp_path, photos):
    """issue 15 item 3 and issue 14 item 7: a no-change re-run walks and stats, and returns."""
    library = str(tmp_path / "lib")
    first = _run_cli("index", str(photos), "--library", library, "--model", "tiny-test", "--json")
    assert json.loads(first.stdout)["indexed"] == 12
    again = _run_cli("index", str(photos), "--library", library, "--json")
    assert json.loads(again.stdout)["unchanged"] == 12 and json.loads(again.stdout)["indexed"] == 0
    assert json.loads(again.stderr.strip().splitlines()[-1]) == []  # no torch, no open_clip, no runtime
    empty = tmp_path / "empty"
    empty.mkdir()
    fresh = _run_cli("index", str(empty), "--library", str(tmp_path / "new"), "--model", "tiny-test", "--json")
    assert json.loads(fresh.stderr.strip().splitlines()[-1]) == []  # an empty folder: no model either
    (photos / "img01.jpg").unlink()
    make_image(photos / "new.png", seed=99)
    changed = _run_cli("index", str(photos), "--library", library, "--json")
    report = json.loads(changed.stdout)
    assert (report["indexed"], report["removed"], report["unchanged"]) == (1, 1, 11)
    loaded = json.loads(changed.stderr.strip().splitlines()[-1])
    assert set(loaded) & {"openvino", "onnxruntime"} and "torch" not in loaded  # the cached export, no torch


@pytest.mark.slow
def test_failed_exports_fall_back_to_torch_with_a_note(tmp_path, monkeypatch):
    import errno

    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # a cache that cannot be created (as a read-only one, even for root)
    monkeypatch.setenv("JRSEARCH_CACHE", str(blocked))
    encoder = load_encoder(TINY_TEST_MODEL)
    fallback = [n for n in encoder.notes if "torch instead of ONNX Runtime" in n]
    assert encoder.backend == "torch" and len(fallback) == 1 and "could not write the ONNX export" in fallback[0]
    assert any("text-tower export for fast text queries was not written" in n for n in encoder.notes)
    assert encoder.encode_texts(["a dog"]).shape == (1, encoder.dim)

    monkeypatch.setenv("JRSEARCH_CACHE", str(tmp_path / "full"))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("jrsearch.retrieval.encoders.onnx.session", no_space)  # fails part way through the export
        encoder = load_encoder(TINY_TEST_MODEL)
    assert encoder.backend == "torch" and any("No space left on device" in n for n in encoder.notes)
    leftovers = [p.name for p in (tmp_path / "full" / "models").glob("tiny-test-*/*")]
    assert sorted(leftovers) == ["meta.json", "query_model"]  # no half-written ONNX folder


@pytest.mark.slow
def test_unexportable_or_mismatching_models_fall_back_to_torch(tmp_path, monkeypatch):
    import torch

    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder

    monkeypatch.setenv("JRSEARCH_CACHE", str(tmp_path / "cache"))

    def broken(*args, **kwargs):
        raise torch.onnx.errors.UnsupportedOperatorError("aten::thing", 17, 18)

    with monkeypatch.context() as patch:
        patch.setattr(torch.onnx, "export", broken)
        encoder = load_encoder(TINY_TEST_MODEL)
    assert encoder.backend == "torch" and any("did not export to ONNX" in n for n in encoder.notes)

    with monkeypatch.context() as patch:
        patch.setattr("jrsearch.retrieval.encoders.onnx.PROBE_COSINE", 1.1)  # no export can match this
        encoder = load_encoder(TINY_TEST_MODEL)
    assert encoder.backend == "torch" and any("differs from torch" in n for n in encoder.notes)
    assert load_encoder(TINY_TEST_MODEL).backend in CPU_RUNTIMES  # the export: nothing stale was left behind


@pytest.mark.slow
def test_the_cache_is_keyed_by_the_weights(tmp_path, monkeypatch, tiny_encoder):
    import torch

    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.types import ModelSpec

    monkeypatch.setenv("JRSEARCH_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "tiny.pt"
    torch.save(tiny_encoder.model.state_dict(), checkpoint)
    spec = ModelSpec("tiny-test", str(checkpoint))
    first = load_encoder(spec)
    assert first.backend in CPU_RUNTIMES
    text = first.encode_texts(["a dog"])
    state = {k: v.flip(0) if k == "text_projection" else v for k, v in tiny_encoder.model.state_dict().items()}
    torch.save(state, checkpoint)  # other weights behind the same path
    second = load_encoder(spec)
    assert second.folder != first.folder
    assert not np.allclose(second.encode_texts(["a dog"]), text)
    assert len(list((tmp_path / "cache" / "models").glob("tiny-test-*"))) == 2


def test_openvino_runs_the_export_like_onnx_runtime(tiny_onnx_encoder, photos):
    """OpenVINO runs the same export as ONNX Runtime to the same vectors, checked once."""
    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder
    from jrsearch.retrieval.encoders.onnx import OPENVINO_CHECK
    from jrsearch.retrieval.imageio import open_image

    encoder = load_encoder(TINY_TEST_MODEL, backend="openvino")
    assert (encoder.backend, encoder.precision, encoder.notes) == ("openvino", "fp32", [])
    inputs = [encoder.preprocess(open_image(p)) for p in sorted(photos.rglob("*.jpg"))]
    for batch in (inputs, inputs[:1]):  # split across the streams, and a batch of one
        got, expected = encoder.encode_images(batch), tiny_onnx_encoder.encode_images(batch)
        assert got.shape == expected.shape and np.sum(got * expected, axis=1).min() >= 0.9999
    many = inputs * 3  # more than a batch: the streams take parts in turn, and the rows keep their order
    encoder.batch_size = 3
    got, expected = encoder.encode_images(many), tiny_onnx_encoder.encode_images(many)
    assert len(many) > 2 * encoder.batch_size and np.sum(got * expected, axis=1).min() >= 0.9999
    texts = ["a dog on a beach", "", "x " * 100]
    assert np.sum(encoder.encode_texts(texts) * tiny_onnx_encoder.encode_texts(texts), axis=1).min() >= 0.9999
    checked = json.loads((encoder.folder / OPENVINO_CHECK).read_text())
    assert min(checked["fp32"].values()) >= 0.9999


def _bf16_unavailable() -> str | None:
    from jrsearch.retrieval.encoders.openvino_runtime import RuntimeUnavailable, require

    try:
        require("bf16")
    except RuntimeUnavailable as exc:
        return str(exc)
    return None


@pytest.mark.skipif(_bf16_unavailable() is not None, reason=f"no bf16 here: {_bf16_unavailable()}")
def test_bf16_vectors_match_fp32(tiny_onnx_encoder, photos):
    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder
    from jrsearch.retrieval.imageio import open_image

    encoder = load_encoder(TINY_TEST_MODEL, precision="bf16")
    assert (encoder.backend, encoder.precision, encoder.notes) == ("openvino", "bf16", [])
    inputs = [encoder.preprocess(open_image(p)) for p in sorted(photos.rglob("*.jpg"))]
    assert np.sum(encoder.encode_images(inputs) * tiny_onnx_encoder.encode_images(inputs), axis=1).min() >= 0.9999


def test_openvino_that_cannot_run_or_does_not_match_leaves_onnx_runtime(tiny_onnx_encoder, monkeypatch):
    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder, onnx, openvino_runtime, tuning
    from jrsearch.retrieval.errors import ModelUnavailableError

    monkeypatch.setattr(onnx, "OPENVINO_CHECK", "openvino_check_strict.json")
    monkeypatch.setattr(tuning, "TUNING", "tuning_strict.json")  # measure again: OpenVINO is consulted
    monkeypatch.setattr(onnx, "PROBE_COSINE", 1.01)  # no runtime can match this
    for precision in ("fp32", "bf16"):
        encoder = load_encoder(TINY_TEST_MODEL, precision=precision)
        assert (encoder.backend, encoder.precision) == ("onnx", "fp32")
        # a CPU without bf16 instructions is turned away before the comparison, and says that
        why = (_bf16_unavailable() if precision == "bf16" else None) or "differs from ONNX Runtime fp32"
        assert len(encoder.notes) == 1 and why in encoder.notes[0], encoder.notes
    with pytest.raises(ModelUnavailableError, match="--backend openvino cannot embed"):
        load_encoder(TINY_TEST_MODEL, backend="openvino")
    monkeypatch.undo()
    monkeypatch.setattr(tuning, "TUNING", "tuning_no_openvino.json")

    def not_installed():
        raise openvino_runtime.RuntimeUnavailable("OpenVINO is not installed (test)")

    monkeypatch.setattr(openvino_runtime, "_core", not_installed)
    encoder = load_encoder(TINY_TEST_MODEL)
    assert encoder.backend == "onnx" and encoder.notes == [
        "embedding in fp32 on ONNX Runtime: OpenVINO is not installed (test)"]
    assert np.allclose(encoder.encode_texts(["a dog"]), tiny_onnx_encoder.encode_texts(["a dog"]))


@pytest.mark.parametrize(("backend", "precision"), [("openvino", "int8"), ("onnx", "bf16"), ("onnx", "fp16")])
def test_a_runtime_asked_for_a_precision_it_does_not_run_says_so(backend, precision):
    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder
    from jrsearch.retrieval.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match=f"--backend {backend} runs .*, not {precision}"):
        load_encoder(TINY_TEST_MODEL, backend=backend, precision=precision)
