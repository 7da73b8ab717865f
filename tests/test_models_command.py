"""`jrsearch models`: open_clip's published figures joined with the measured costs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from jrsearch.cli.main import app


def test_models_json_lists_published_figures_fast_path_and_embedding_size():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["model"], r["pretrained"]): r for r in json.loads(result.output)}
    default = rows["ViT-B-32", "laion2b_s34b_b79k"]
    assert default["imagenet"] == 0.6656 and default["embed_dim"] == 512 and 0.5 < default["coco_t2i_r5"] < 0.8
    assert rows["ViT-L-14", "laion2b_s32b_b82k"]["embed_dim"] == 768
    assert rows["MobileCLIP2-S0", "dfndr2b"]["fast_path"] in ("expected", "measured")
    assert rows["coca_ViT-B-32", "laion2b_s13b_b90k"]["fast_path"] in ("expected", "measured")
    assert rows["ViT-B-16-SigLIP", "webli"]["fast_path"].startswith("untested")
    assert rows["xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"]["fast_path"].startswith("no")
    fast = json.loads(CliRunner().invoke(app, ["models", "--json", "--fast"]).output)
    assert fast and all(r["fast_path"] in ("expected", "measured") for r in fast) and len(fast) < len(rows)


def test_measured_costs_join_their_model(tmp_path):
    from jrsearch.retrieval.model_table import entries

    measured = tmp_path / "models.json"
    measured.write_text(json.dumps({"models": {
        "ViT-B-32": {"export": {"wall_s": 60.0, "peak_rss_mib": 2000.0},
                     "warm": {"backend": "openvino", "cpu_s_per_image": 0.1, "cpu_s_per_query": 0.004}},
        "ViT-B-16-SigLIP": {"export": {"wall_s": 9.0}, "warm": {"backend": "torch", "cpu_s_per_image": 0.5}}}}))
    rows = {(e.model, e.pretrained): e for e in entries(measured)}
    b32 = rows["ViT-B-32", "openai"]
    assert (b32.fast_path, b32.cpu_s_per_image, b32.cpu_s_per_query, b32.export_s) == ("measured", 0.1, 0.004, 60.0)
    assert rows["ViT-B-16-SigLIP", "webli"].fast_path == "no (measured on torch)"
    assert rows["ViT-B-16", "openai"].cpu_s_per_image is None  # not measured


def test_models_table_prints_its_sources():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "ViT-B-32" in result.output and "laion2b_s34b_b79k" in result.output
    assert "mlfoundations/open_clip" in result.output
