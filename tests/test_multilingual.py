"""Multilingual models: the HF text tower's torch-free path, the English-only hint, `bench xtd10`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, make_image
from tiny_multilingual import OWN_CORPUS, write_hf_tower
from typer.testing import CliRunner

from jrsearch.cli.main import app

XTD10_DIR = SHARED_DATA / "xtd10"
runner = CliRunner()
QUERIES = ["ein Hund am Strand", "海滩上的狗", "собака на пляже", "해변의 개", "a dog on a beach", "ビーチの犬",
           "pies na plaży", "  spaced\tout &amp; ﬁne  ", "x " * 100, "😀 emoji"]


def xtd10_captions(language: str) -> list[str]:
    from jrsearch.benchmarks.splits import load_xtd10

    if not (XTD10_DIR / "XTD10").is_dir():
        pytest.skip(f"XTD10 captions not found at {XTD10_DIR} (the shared data folder is absent)")
    return load_xtd10(XTD10_DIR, language).captions


@pytest.fixture(scope="module")
def multilingual_encoder():
    from jrsearch.retrieval.encoders import TINY_MULTILINGUAL_MODEL, load_encoder

    return load_encoder(TINY_MULTILINGUAL_MODEL, device="cpu")


@pytest.fixture(scope="module")
def xtd10_encoder(tmp_path_factory):
    """A tiny XLM-R whose tokenizer is trained here on all XTD10 captions (unigram, as XLM-R's own).

    Trained into a temp dir at test time: the XTD10 licence is noncommercial, so nothing derived from
    it is shipped with jrsearch.
    """
    from jrsearch.benchmarks.splits import XTD10_FILES
    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.encoders.openclip import register_model_configs
    from jrsearch.retrieval.types import ModelSpec

    captions = [c for lang in XTD10_FILES for c in xtd10_captions(lang)]
    folder = tmp_path_factory.mktemp("xtd10-tower")
    write_hf_tower(folder / "tiny-multilingual-xtd10", captions, vocab_size=4000, kind="unigram")
    config = json.loads((Path(__file__).resolve().parents[1] / "retrieval" / "encoders" / "model_configs"
                         / "tiny-multilingual.json").read_text())
    config["text_cfg"].update(hf_model_name="./tiny-multilingual-xtd10", hf_tokenizer_name="./tiny-multilingual-xtd10")
    (folder / "tiny-multilingual-xtd10.json").write_text(json.dumps(config))
    register_model_configs(folder)
    return load_encoder(ModelSpec("tiny-multilingual-xtd10", ""), device="cpu")


def _agreement(encoder, root: Path, texts: list[str]) -> float:
    """The smallest cosine between the exported numpy tower's vectors and open_clip's, with equal token ids."""
    from jrsearch.retrieval.hf_text_tower import HfTextTower, export_query_tower

    assert export_query_tower(encoder, root)
    tower = HfTextTower.load(root, encoder.spec, encoder.dim)
    assert tower is not None
    pad = encoder.model.text.config.pad_token_id
    expected = [[int(i) for i in row if i != pad] for row in encoder.tokenizer(texts).numpy()]
    got = tower.tokenizer(texts)
    wrong = [t for t, a, b in zip(texts, expected, got, strict=True) if a != b]
    assert not wrong, f"{len(wrong)} texts tokenised differently, e.g. {wrong[:3]}"
    return float(np.min(np.sum(tower.encode_texts(texts) * encoder.encode_texts(texts), axis=1)))


def test_hf_tower_matches_open_clip_on_own_texts(multilingual_encoder, tmp_path):
    assert _agreement(multilingual_encoder, tmp_path, OWN_CORPUS + QUERIES) >= 0.9999


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["shipped byte-level BPE", "unigram trained on XTD10"])
def test_hf_tower_matches_open_clip_in_all_11_xtd10_languages(tokenizer, multilingual_encoder, request, tmp_path):
    from jrsearch.benchmarks.splits import XTD10_FILES

    texts = {lang: xtd10_captions(lang) for lang in XTD10_FILES}
    encoder = multilingual_encoder if tokenizer.startswith("shipped") else request.getfixturevalue("xtd10_encoder")
    for lang, captions in texts.items():
        assert _agreement(encoder, tmp_path, captions[::4]) >= 0.9999, lang


def test_stale_or_unsupported_hf_exports_are_not_used(multilingual_encoder, tmp_path):
    from jrsearch.retrieval.hf_text_tower import HfTextTower, load_query_tower
    from jrsearch.retrieval.query_model import EXPORT_DIR, TextTower
    from jrsearch.retrieval.types import ModelSpec

    spec, dim = multilingual_encoder.spec, multilingual_encoder.dim
    _agreement(multilingual_encoder, tmp_path, QUERIES[:2])
    assert TextTower.load(tmp_path, spec, dim) is None  # the CLIP loader does not read an HF export
    assert isinstance(load_query_tower(tmp_path, spec, dim), HfTextTower)
    assert HfTextTower.load(tmp_path, ModelSpec("tiny-multilingual", "other.pt"), dim) is None
    (tmp_path / EXPORT_DIR / "tokenizer.json").write_text("{not json")
    assert HfTextTower.load(tmp_path, spec, dim) is None  # a damaged export: the torch path answers

    import torch

    from jrsearch.retrieval.hf_text_tower import export_hf_text_tower

    text = multilingual_encoder.model.text
    pooler = text.pooler
    try:
        text.pooler = type("LastTokenPooler", (torch.nn.Module,), {})()  # a pooling the numpy tower does not know
        assert export_hf_text_tower(multilingual_encoder, tmp_path / "other") is False
    finally:
        text.pooler = pooler


def test_real_multilingual_models_fail_offline_with_a_remedy(monkeypatch):
    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.errors import MissingExtraError, ModelUnavailableError
    from jrsearch.retrieval.extras import install_hint
    from jrsearch.retrieval.types import ModelSpec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=r"xlm-roberta-base.*tiny-multilingual"):
        load_encoder(ModelSpec("xlm-roberta-base-ViT-B-32", ""), device="cpu")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(MissingExtraError, match="needs transformers.*" + re.escape(install_hint("multilingual"))):
        load_encoder(ModelSpec("xlm-roberta-base-ViT-B-32", ""), device="cpu")


# -- the English-only hint ------------------------------------------------------------------------

@pytest.mark.parametrize("text, scripts", [
    ("海滩上的狗", ["Han (CJK)"]), ("собака на пляже", ["Cyrillic"]), ("해변의 개", ["Hangul"]),
    ("كلب على الشاطئ", ["Arabic"]), ("σκύλος στην παραλία", ["Greek"]), ("ビーチの犬", ["Japanese kana", "Han (CJK)"]),
    ("a dog ＿ ｄｏｇ", []), ("mały pies, naïve café", []), ("😀 123 !?", []),
    ("dog собака 狗", ["Cyrillic", "Han (CJK)"]),
])
def test_scripts_come_from_unicode_names(text, scripts):
    from jrsearch.retrieval.query_language import non_latin_scripts

    assert non_latin_scripts(text) == scripts


def test_hint_only_for_english_only_models_and_other_scripts():
    from jrsearch.retrieval.query_language import english_only_hint

    hint = english_only_hint("собака на пляже", "ViT-B-32")
    assert hint and "ViT-B-32 is an English-only model" in hint and "Cyrillic" in hint
    assert "--model xlm-roberta-base-ViT-B-32 --pretrained laion5b_s13b_b90k" in hint and "\n" not in hint
    assert english_only_hint("a dog on a beach", "ViT-B-32") is None
    assert english_only_hint("ein Hund am Strand", "ViT-B-32") is None
    for multilingual in ("xlm-roberta-base-ViT-B-32", "nllb-clip-base", "ViT-B-16-SigLIP-i18n-256",
                         "tiny-multilingual"):
        assert english_only_hint("собака на пляже", multilingual) is None


def _index(lib: Path, folder: Path, model: str) -> None:
    (folder / "caps.txt").write_text("a dog on a beach\nсобака на пляже\n海滩上的狗\n")
    for i in range(4):
        make_image(folder / "photos" / f"img{i}.jpg", seed=i)
    result = runner.invoke(app, ["index", str(folder / "photos"), str(folder / "caps.txt"), "--model", model,
                                 "--library", str(lib)], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("fast", [True, False])
def test_other_script_on_an_english_only_library_answers_with_one_note(tmp_path, fast):
    lib = tmp_path / "lib"
    _index(lib, tmp_path, "tiny-test")
    extra = [] if fast else ["--device", "cpu"]  # an override takes the torch path
    for text in ("海滩上的狗", "a dog on a beach"):
        result = runner.invoke(app, ["query", text, "--kind", "text", "--json", "--library", str(lib), *extra],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)) == 3  # still answers
        notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
        if text.isascii():
            assert notes == []
        else:
            assert len(notes) == 1 and "tiny-test is an English-only model" in notes[0] and "Han (CJK)" in notes[0]


def test_multilingual_library_end_to_end_without_torch(tmp_path):
    lib = tmp_path / "lib"
    _index(lib, tmp_path, "tiny-multilingual")
    from jrsearch.retrieval import model_cache
    from jrsearch.retrieval.types import ModelSpec

    shared = model_cache.find(ModelSpec("tiny-multilingual", ""))  # the export is shared per model now
    assert shared is not None
    meta = json.loads((shared / "query_model" / "meta.json").read_text())
    assert meta["format"] == "hf-1" and meta["model"] == "tiny-multilingual"
    for text in ("海滩上的狗", "ein Hund am Strand"):
        runs = [runner.invoke(app, ["query", text, "--kind", "text", "--json", "--library", str(lib), *extra],
                              catch_exceptions=False) for extra in ([], ["--device", "cpu"])]
        quick, normal = (json.loads(r.stdout) for r in runs)
        assert [(h["rank"], h["text"]) for h in quick] == [(h["rank"], h["text"]) for h in normal]
        assert np.allclose([h["score"] for h in quick], [h["score"] for h in normal], atol=1e-5)
        assert all("note:" not in r.stderr for r in runs)


def test_serve_shows_the_hint(tmp_path):
    from fastapi.testclient import TestClient

    from jrsearch.cli.web.app import create_app
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.service import LibraryService

    _index(tmp_path / "lib", tmp_path, "tiny-test")
    client = TestClient(create_app(LibraryService(Library.open(tmp_path / "lib")), warm=False))
    body = client.get("/api/search", params={"q": "собака на пляже", "kind": "text"}).json()
    assert len(body["results"]) == 3 and "English-only" in body["hint"] and "Cyrillic" in body["hint"]
    assert client.get("/api/search", params={"q": "a dog", "kind": "text"}).json()["hint"] is None


# -- bench xtd10 ----------------------------------------------------------------------------------

def test_xtd10_caption_counts_are_checked(tmp_path):
    from jrsearch.benchmarks.splits import load_xtd10
    from jrsearch.benchmarks.xtd10_bench import parse_languages
    from jrsearch.retrieval.errors import JrsearchError

    (tmp_path / "XTD10").mkdir()
    names = [f"COCO_train2014_{i:012d}.jpg" for i in range(1000)]
    (tmp_path / "XTD10" / "test_image_names.txt").write_text("\n".join(names))  # no final newline: fine
    (tmp_path / "XTD10" / "test_1kcaptions_en.txt").write_text("\n".join(f"caption {i}" for i in range(1000)) + "\n")
    split = load_xtd10(tmp_path, "en")
    assert len(split.images) == len(split.captions) == 1000 and split.captions[7] == "caption 7"
    assert split.images[7].filename == names[7] and list(split.caption_image[:3]) == [0, 1, 2]
    (tmp_path / "XTD10" / "test_1kcaptions_ru.txt").write_text("\n".join(f"c {i}" for i in range(999)))
    with pytest.raises(JrsearchError, match=r"expected 1,000 non-empty captions.*found 999"):
        load_xtd10(tmp_path, "ru")
    with pytest.raises(JrsearchError, match=r"MIC/test_1kcaptions_de\.txt does not exist"):
        load_xtd10(tmp_path, "de")
    assert parse_languages("all")[:3] == ["en", "de", "fr"] and len(parse_languages("all")) == 11
    assert parse_languages("zh, en") == ["en", "zh"]
    with pytest.raises(JrsearchError, match="unknown XTD10 language"):
        parse_languages("en,xx")


@pytest.fixture(scope="module")
def standin_images(tmp_path_factory) -> Path:
    """Generated images under the 1,000 real XTD10 file names (the COCO images are not here)."""
    xtd10_captions("en")
    root = tmp_path_factory.mktemp("xtd10-images")
    names = (XTD10_DIR / "XTD10" / "test_image_names.txt").read_text().split()
    for i, name in enumerate(names):
        make_image(root / name, seed=i, size=(48, 32))
    return root


def _bench(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["bench", "xtd10", "--model", "tiny-multilingual", *args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.slow
def test_bench_xtd10_structural_run_gives_all_11_languages(standin_images, tmp_path):
    from jrsearch.benchmarks.splits import XTD10_FILES

    code, output = _bench("--images", str(standin_images), "--out", str(tmp_path / "out"),
                          "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "xtd10-all-tiny-multilingual.json").read_text())
    assert report["languages"] == list(XTD10_FILES) and not report["partial"]
    assert report["counts"] == {lang: {"images": 1000, "captions": 1000, "missing": 0, "unreadable": 0}
                                for lang in XTD10_FILES}
    ours = [row for row in report["rows"] if row["ranked_by"] == "exact"]
    assert [row["language"] for row in ours] == [*XTD10_FILES, "mean"]
    for row in ours:
        for direction in ("image_to_text", "text_to_image"):
            cells = row[direction]
            assert 0 <= cells["R@1"] <= cells["R@5"] <= cells["R@10"] <= 100 and 1 <= cells["Med r"] <= 1000
    mean = ours[-1]["text_to_image"]["R@10"]
    assert mean == pytest.approx(np.mean([row["text_to_image"]["R@10"] for row in ours[:-1]]), abs=1e-3)
    for lang in XTD10_FILES:  # every language's ranks: one per image and per caption
        ranks = report["per_language"][lang]["folds"][0]["ranks"]
        assert len(ranks["image_to_text"]) == len(ranks["text_to_image"]) == 1000
    published = {(row["language"], row["model"]) for row in report["rows"] if row["ranked_by"] == "published"}
    assert ("zh", "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k") in published
    assert ("mean", "ViT-B-32/laion2b_s34b_b79k") in published
    markdown = (tmp_path / "out" / "xtd10-all-tiny-multilingual.md").read_text()
    assert "11 of 11 languages complete" in markdown and "| mean" in markdown


@pytest.mark.slow
def test_bench_xtd10_refuses_a_partial_run_unless_allowed(standin_images, tmp_path):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(standin_images, images)
    missing = sorted(images.iterdir())[3]
    missing.unlink()
    code, output = _bench("--images", str(images), "--lang", "en,ko", "--out", str(tmp_path / "out"))
    assert code == 1 and "1 of 1,000 images are missing" in output and "--allow-partial" in output
    code, output = _bench("--images", str(images), "--lang", "en,ko", "--allow-partial", "--out", str(tmp_path / "out"),
                          "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "xtd10-en-ko-tiny-multilingual-PARTIAL.json").read_text())
    assert report["partial"] and report["counts"]["ko"] == {"images": 999, "captions": 999, "missing": 1,
                                                            "unreadable": 0}
    assert "PARTIAL" in output
