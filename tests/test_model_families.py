"""open_clip's model families on the fast CPU path: timm image towers (MobileCLIP2, EVA02, ConvNeXt)
and CoCa's contrastive towers export to ONNX, index, and answer a cold text query without torch.

The configs in tests/model_configs are the real families' tower classes at toy widths (random
weights): fastvit_mci0 at 64 px (MobileCLIP2-S0's image tower, with its bidirectional text
tower), eva02_tiny (EVA02-B-16's), convnext_atto (convnext_base's), a CoCa with small widths, and
SigLIP's text layout (a Hugging Face tokenizer, canonicalize clean, padded, bidirectional, last token
pooled) over the shipped tiny-multilingual tokenizer files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image

CONFIGS = Path(__file__).parent / "model_configs"
FAMILIES = {"test-mobileclip2": False, "test-convnext": False, "test-coca": False, "test-siglip": False,
            "test-eva02": True}  # name: slow
ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a dog on a beach", "Two PEOPLE riding bikes &amp; a car", "", "x " * 60]  # the last fills the context
COLD_QUERY = ("import sys, json\nfrom jrsearch.cli.main import app\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
              "print(json.dumps(sorted(m for m in ('torch', 'open_clip', 'timm') if m in sys.modules)),"
              " file=sys.stderr)")


@pytest.fixture(scope="module", autouse=True)
def family_configs() -> None:
    from jrsearch.retrieval.encoders.openclip import register_model_configs

    register_model_configs(CONFIGS)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if slow else n
                                  for n, slow in FAMILIES.items()])
def test_family_exports_indexes_and_answers_a_cold_query_without_torch(name, tmp_path):
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.hf_text_tower import load_query_tower
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.types import ModelSpec

    spec = ModelSpec(name, "")
    encoder = load_encoder(spec, backend="onnx")
    assert encoder.backend == "onnx" and not encoder.notes, encoder.notes  # exported and checked against torch

    tower = load_query_tower(tmp_path, spec, encoder.dim)  # the numpy text tower the cold query reads
    assert tower is not None
    torch_encoder = load_encoder(spec, device="cpu", backend="torch")
    expected = torch_encoder.encode_texts(TEXTS)
    assert np.min(np.sum(tower.encode_texts(TEXTS) * expected, axis=1)) >= 0.9999
    assert np.min(np.sum(encoder.encode_texts(TEXTS) * expected, axis=1)) >= 0.9999

    media = tmp_path / "media"
    for i in range(3):
        make_image(media / f"img{i}.jpg", seed=i)
    (media / "captions.txt").write_text("a red square\na dog on a beach\nblue sky over the sea\n")
    library = Library.open(tmp_path / "lib", create=True)
    assert not run_index(library, encoder, [media, media / "captions.txt"]).failed

    args = ["query", "a dog on a beach", "--kind", "text", "--json", "--library", str(library.root)]
    cold = subprocess.run([sys.executable, "-c", COLD_QUERY, *args], capture_output=True, text=True, cwd=ROOT)
    assert cold.returncode == 0, cold.stderr
    assert json.loads(cold.stderr.strip().splitlines()[-1]) == []  # neither torch nor open_clip nor timm
    hits = json.loads(cold.stdout)
    assert len(hits) == 3 and hits[0]["text"] == "a dog on a beach"  # the indexed caption's own vector


def test_siglip_without_its_tokenizer_offline_is_one_line_naming_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from jrsearch.cli.main import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    make_image(tmp_path / "photos" / "a.jpg", seed=0)
    for name, repo in (("ViT-B-16-SigLIP", "timm/ViT-B-16-SigLIP"), ("ViT-B-16-SigLIP2", "timm/ViT-B-16-SigLIP2")):
        result = CliRunner().invoke(app, ["index", str(tmp_path / "photos"), "--model", name, "--pretrained", "none",
                                          "--library", str(tmp_path / name)])
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.exception  # no traceback
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and f"tokenizer '{repo}'" in errors[0] and "HF_HUB_OFFLINE" in errors[0], result.output


def test_numpy_text_tower_matches_a_bidirectional_tower_pooled_on_its_last_token(tiny_encoder, tmp_path):
    """SigLIP's text layout (no causal mask, the last padded position pooled) on the tiny model."""
    from jrsearch.retrieval.query_model import TextTower, export_text_tower

    model = tiny_encoder.model
    mask = model.attn_mask
    try:
        model.text_pool_type, model.attn_mask = "last", None
        assert export_text_tower(tiny_encoder, tmp_path)
        tower = TextTower.load(tmp_path, tiny_encoder.spec, tiny_encoder.dim)
        assert tower is not None and tower.meta["causal"] is False and tower.meta["pool"] == "last"
        assert np.min(np.sum(tower.encode_texts(TEXTS) * tiny_encoder.encode_texts(TEXTS), axis=1)) >= 0.9999
    finally:
        model.text_pool_type, model.attn_mask = "argmax", mask
