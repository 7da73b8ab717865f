"""Pre-exported ONNX towers in immich's layout: made by jrsearch's exporter from tiny-test, then
indexed and searched in a process where torch and open_clip cannot be imported, ranking as the
torch-exported path does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import jrsearch, make_image

from jrsearch.retrieval.encoders import TINY_TEST_MODEL

# Runs the CLI with torch, torchvision and open_clip unimportable (`import torch` raises ImportError).
WITHOUT_TORCH = """
import sys
for name in ("torch", "torchvision", "open_clip"):
    sys.modules[name] = None
from typer.testing import CliRunner
from jrsearch.cli.main import app
result = CliRunner().invoke(app, sys.argv[1:])
sys.stdout.write(result.stdout)
sys.stderr.write(result.stderr)
sys.stderr.write("imported: " + ",".join(m for m in ("torch", "open_clip") if sys.modules.get(m)) + "\\n")
sys.exit(result.exit_code)
"""


def without_torch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> Path:
    from jrsearch.retrieval.encoders.towers_export import export_towers

    return export_towers(TINY_TEST_MODEL, tmp_path_factory.mktemp("towers") / "tiny-test")


def test_the_exported_tokenizer_json_tokenizes_as_open_clip(tmp_path):
    import open_clip

    from jrsearch.retrieval.encoders.onnx_towers import TOKENIZER, TOKENIZER_CONFIG, TowersTokenizer
    from jrsearch.retrieval.encoders.openclip import _register_shipped_configs
    from jrsearch.retrieval.encoders.towers_export import EOS, clip_tokenizer

    _register_shipped_configs()
    simple = open_clip.get_tokenizer("tiny-test")
    clip_tokenizer(simple).save(str(tmp_path / TOKENIZER))
    (tmp_path / TOKENIZER_CONFIG).write_text(json.dumps({"pad_token": EOS}))
    texts = ["a dog on a beach", "Two People, a RED building at night!!", "", "x " * 90, "café 2024 don't",
             "&amp; <b>hi</b>", "日本の猫"]
    ours, theirs = TowersTokenizer(tmp_path, simple.context_length)(texts), simple(texts).numpy()
    eot = simple.eot_token_id
    for row, text in enumerate(texts):  # equal up to the first end token; after it, padding (inert)
        end = list(theirs[row]).index(eot) + 1
        assert list(ours[row, :end]) == list(theirs[row, :end]), text


def test_a_folder_without_the_layout_is_one_line_naming_the_missing_file(tmp_path):
    (tmp_path / "towers").mkdir()
    (tmp_path / "towers" / "config.json").write_text("{}")
    result = jrsearch("index", str(make_image(tmp_path / "a.png", 0)), "--checkpoint", str(tmp_path / "towers"),
                      lib=tmp_path / "lib", ok=False)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'towers'} is not a folder of ONNX towers: it has no visual/model.onnx; "
        "pass a folder laid out as immich's (config.json, visual/, textual/)"]


def test_a_hub_repo_that_is_not_cached_offline_is_one_line(tmp_path):
    result = without_torch("index", str(make_image(tmp_path / "a.png", 0)), "--library", str(tmp_path / "lib"),
                           "--model", "immich-app/ViT-B-32__openai",
                           env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "error: model immich-app/ViT-B-32__openai: it is not in the Hugging Face cache and the hub cannot be "
        "reached from here; download it once where the hub is reachable (huggingface-cli download "
        "immich-app/ViT-B-32__openai) or pass --model DIR with a folder that holds its ONNX towers",
        "imported: "]  # before any file is embedded: no progress bar


@pytest.mark.slow
def test_towers_index_and_search_without_torch_as_the_torch_export_does(towers, tmp_path):
    photos = tmp_path / "photos"
    for seed in range(6):
        make_image(photos / f"{seed}.png", seed)
    jrsearch("index", str(photos), "--model", "tiny-test", lib=tmp_path / "torch-lib")
    expected = json.loads(jrsearch("query", "a dog on a beach", "--json", lib=tmp_path / "torch-lib").stdout)

    lean = ["--library", str(tmp_path / "lean-lib")]
    indexed = without_torch("index", str(photos), "--model", str(towers), *lean)
    assert indexed.returncode == 0, indexed.stderr
    assert indexed.stderr.splitlines()[-1] == "imported: "
    answered = without_torch("query", "a dog on a beach", "--json", *lean)
    assert answered.returncode == 0, answered.stderr
    assert answered.stderr.splitlines()[-1] == "imported: "
    got = json.loads(answered.stdout)
    assert [r["path"] for r in got] == [r["path"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], atol=1e-4)

    by_image = without_torch("query", "--image", str(photos / "3.png"), "--json", *lean)
    assert json.loads(by_image.stdout)[0]["path"] == str(photos / "3.png")


@pytest.mark.slow
def test_towers_with_a_batch_of_one_as_immich_publishes_them(towers, tmp_path):
    """immich exports each tower with a fixed batch of 1; the runners feed it one input at a time."""
    import onnx

    from jrsearch.retrieval.encoders.onnx_towers import load_towers
    from jrsearch.retrieval.service import choose_model
    from jrsearch.retrieval.types import ModelChoice

    fixed = tmp_path / "fixed"
    for path in towers.rglob("*"):
        target = fixed / path.relative_to(towers)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.name == "model.onnx":
            model = onnx.load(str(path))
            model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
            target.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(model, str(target))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    dynamic = load_towers(choose_model(ModelChoice(checkpoint=towers)))
    one = load_towers(choose_model(ModelChoice(model=str(fixed))))
    images = np.random.default_rng(0).standard_normal((3, 3, dynamic.image_size, dynamic.image_size), np.float32)
    np.testing.assert_allclose(one.encode_images(images), dynamic.encode_images(images), atol=1e-5)
    texts = ["a dog", "two cats on a red sofa", ""]
    np.testing.assert_allclose(one.encode_texts(texts), dynamic.encode_texts(texts), atol=1e-5)
