"""The torch-free text query: tokenizer, numpy text tower and lean read path against open_clip and SearchEngine."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import COCO_DIR
from typer.testing import CliRunner

from jrsearch.cli.main import app

TRICKY = [
    "Héllo Wörld!", "emoji 🐶🏖️ dog", "&amp;amp; &lt;b&gt;bold&lt;/b&gt;", "’curly’ “quotes”", "ﬁne ligature",
    "ＦＵＬＬ ｗｉｄｔｈ", "mojibake Ã©tÃ©", "tab\there\nnewline\r\nx", "\x1b[31mred\x1b[0m", "ctrl\x00\x07chars",
    "'ſ it's 'S 'LL", "<start_of_text> a <END_OF_TEXT> b", "foo<end_of_text>bar", "日本語のテキスト 中文",
    "İstanbul ΣΊΣΥΦΟΣ", "x " * 200, "a" * 500, "", "   ", "123456 3.14 1,000", "don't won't they'll I'd we've",
    "naïve café résumé", "\u200b zero\u00a0width", "a\u0301 combining", "Ⅻ ½ ² ₃", "https://x.org/a?b=c&d=e",
    "C++ & C# <tag>", "😀😃😄😁😆😅😂🤣", "A&B", "plain ascii, with punctuation!?",
]
QUERIES = ["a dog on a beach", "A RED CAR", "two people riding bikes down a street", "émoji 🐶", "x" * 400]


def coco_captions() -> list[str]:
    path = COCO_DIR / "captions.tsv"
    if not path.is_file():
        pytest.skip(f"COCO captions not found at {path} (the shared data folder is absent)")
    with path.open(newline="") as handle:
        return [row["caption"] for row in csv.DictReader(handle, delimiter="\t")]


@pytest.fixture(scope="module")
def clip_tokenizer():
    from open_clip.tokenizer import default_bpe

    from jrsearch.retrieval.tokenizer import ClipTokenizer

    return ClipTokenizer.from_bpe_file(Path(default_bpe()))


@pytest.mark.parametrize("texts", ["tricky", "coco"])
def test_tokenizer_matches_open_clip_token_for_token(clip_tokenizer, texts, tmp_path):
    from open_clip.tokenizer import SimpleTokenizer

    from jrsearch.retrieval.tokenizer import ClipTokenizer

    batch = TRICKY if texts == "tricky" else coco_captions()
    if texts == "coco":
        assert len(batch) == 25_000
    expected = SimpleTokenizer()(batch).numpy()
    clip_tokenizer.save(tmp_path / "merges.npy")
    got = ClipTokenizer.load(tmp_path / "merges.npy", 77)(batch)  # the saved form a query loads
    wrong = [batch[i] for i in np.nonzero((expected != got).any(axis=1))[0]]
    assert not wrong, f"{len(wrong)} texts tokenised differently, e.g. {wrong[:3]}"


def test_plain_texts_skip_ftfy_only_where_it_changes_nothing():
    import ftfy

    from jrsearch.retrieval.tokenizer import _is_plain

    assert not _is_plain("a &amp; b") and not _is_plain("\x1b[0m") and not _is_plain("café")
    for text in ("a dog on a beach", "tab\tand\r\nnewlines", "C++ <tag> 100% $5 ~ `x` {y} [z] |"):
        assert _is_plain(text) and ftfy.fix_text(text).split() == text.split()


def _tower_agrees(encoder, root: Path, texts: list[str]) -> float:
    from jrsearch.retrieval.query_model import TextTower, export_text_tower

    assert export_text_tower(encoder, root)
    tower = TextTower.load(root, encoder.spec, encoder.dim)
    assert tower is not None
    return float(np.min(np.sum(tower.encode_texts(texts) * encoder.encode_texts(texts), axis=1)))


def test_numpy_text_tower_matches_open_clip_tiny(tiny_encoder, tmp_path):
    try:
        texts = coco_captions()[::100] + TRICKY
    except pytest.skip.Exception:
        texts = TRICKY + QUERIES
    assert _tower_agrees(tiny_encoder, tmp_path, texts) >= 0.9999


@pytest.mark.slow
def test_numpy_text_tower_matches_open_clip_vit_b_32(tmp_path):
    """The default-size tower (random init: no weights offline); gelu, 12 layers, 77 tokens."""
    from jrsearch.retrieval.encoders import load_encoder
    from jrsearch.retrieval.types import ModelSpec

    encoder = load_encoder(ModelSpec("ViT-B-32", ""), device="cpu", backend="torch")
    assert _tower_agrees(encoder, tmp_path, TRICKY[:12] + QUERIES) >= 0.9999


def test_quick_gelu_towers_are_exported_with_their_activation(tiny_encoder, tmp_path):
    import open_clip

    from jrsearch.retrieval.query_model import TextTower

    mlps = [block.mlp for block in tiny_encoder.model.transformer.resblocks]
    gelus = [mlp.gelu for mlp in mlps]
    try:
        for mlp in mlps:
            mlp.gelu = open_clip.transformer.QuickGELU()
        assert _tower_agrees(tiny_encoder, tmp_path, QUERIES) >= 0.9999
        assert TextTower.load(tmp_path, tiny_encoder.spec, tiny_encoder.dim).meta["activation"] == "quick_gelu"
    finally:
        for mlp, gelu in zip(mlps, gelus, strict=True):
            mlp.gelu = gelu
    assert _tower_agrees(tiny_encoder, tmp_path, QUERIES) >= 0.9999  # the stale export is replaced
    assert TextTower.load(tmp_path, tiny_encoder.spec, tiny_encoder.dim).meta["activation"] == "gelu"


def test_other_text_towers_are_not_exported(tiny_encoder, tmp_path):
    from jrsearch.retrieval.query_model import EXPORT_DIR, export_text_tower

    model = tiny_encoder.model
    try:
        model.text_pool_type = "eos"  # e.g. a tower pooled on another token: only the torch path knows it
        assert export_text_tower(tiny_encoder, tmp_path) is False
    finally:
        model.text_pool_type = "argmax"
    assert not (tmp_path / EXPORT_DIR).exists()
    assert export_text_tower(object(), tmp_path) is False  # not an open_clip encoder at all


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_encoder):
    from helpers import make_image

    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.query_model import export_text_tower

    base = tmp_path_factory.mktemp("quick")
    for i in range(12):
        make_image(base / "photos" / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.jpg", seed=i)
    try:
        captions = coco_captions()[:300]
    except pytest.skip.Exception:
        captions = [f"caption number {i} about a {w}" for i, w in enumerate(["dog", "car", "beach", "bike"] * 75)]
    (base / "caps.txt").write_text("\n".join(captions) + "\n")
    lib = Library.open(base / "lib", create=True)
    run_index(lib, tiny_encoder, [base / "photos", base / "caps.txt"])
    export_text_tower(tiny_encoder, lib.root)
    yield lib
    lib.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["image", "text"])
def test_quick_search_equals_search_engine(library, tiny_encoder, kind):
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.query_model import TextTower
    from jrsearch.retrieval.quick_search import quick_text_search
    from jrsearch.retrieval.request import Filters, SearchRequest
    from jrsearch.retrieval.types import MediaKind

    engine = SearchEngine(library, encoder=tiny_encoder)
    tower = TextTower.load(library.root, tiny_encoder.spec, tiny_encoder.dim)
    photos = library.root.parent / "photos"
    for text in QUERIES:
        for top_k, path_filter in ((1, Filters()), (10, Filters()), (500, Filters()), (5, Filters.make(photos / "sub")),
                                   (5, Filters.make(glob="*.txt")), (3, Filters.make(glob="*img0[3-7]*"))):
            quick = quick_text_search(library.root, text, SearchRequest(kind, top_k, path_filter))
            # the same query vector: every field identical, scores included
            assert quick == engine.search(tower.encode_texts([text])[0], MediaKind(kind), top_k, path_filter)
            # end to end, open_clip's own vector: the same hits in the same order
            normal = engine.search(engine.embed_text(text), MediaKind(kind), top_k, path_filter)
            assert [(r.rank, r.vector_id, r.path, r.text) for r in quick] == \
                   [(r.rank, r.vector_id, r.path, r.text) for r in normal]
            assert np.allclose([r.score for r in quick], [r.score for r in normal], atol=1e-5)
        assert quick_text_search(library.root, text, SearchRequest(MediaKind.VIDEO)) == []  # no index: as the engine


def test_quick_search_declines_what_only_the_normal_path_can_answer(library, tiny_encoder, tmp_path, monkeypatch):
    import shutil

    from jrsearch.retrieval.quick_search import quick_text_search
    from jrsearch.retrieval.request import SearchRequest
    from jrsearch.retrieval.types import MediaKind

    image, text = SearchRequest(MediaKind.IMAGE), SearchRequest(MediaKind.TEXT)
    root = library.root
    assert quick_text_search(root, "a dog") is not None
    assert quick_text_search(root, "   ") is None  # the engine's "empty query" error
    assert quick_text_search(tmp_path / "nowhere", "a dog") is None  # the "no library" error

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    with sqlite3.connect(copy / "library.db") as con:  # a crash between commit and index save
        con.execute("UPDATE index_state SET generation = generation + 1 WHERE kind = 'image'")
    assert quick_text_search(copy, "a dog", image) is None
    assert quick_text_search(copy, "a dog", text) is not None

    shared = tmp_path / "no-shared-export"
    with monkeypatch.context() as patch:  # what an older library carries itself, without the model cache
        patch.setenv("JRSEARCH_CACHE", str(shared))
        assert quick_text_search(copy, "a dog", text) is not None
        meta = json.loads((copy / "query_model" / "meta.json").read_text())
        (copy / "query_model" / "meta.json").write_text(json.dumps({**meta, "model": "ViT-B-32"}))
        assert quick_text_search(copy, "a dog", text) is None  # an export for another model
        shutil.rmtree(copy / "query_model")
        assert quick_text_search(copy, "a dog", text) is None  # no export anywhere
    assert quick_text_search(copy, "a dog", text) is not None  # the model cache's shared export


def test_cold_cli_text_query_imports_neither_torch_nor_sqlalchemy(library):
    probe = ("import sys, json\nfrom jrsearch.cli.main import app\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted(m for m in ('torch', 'open_clip', 'sqlalchemy') if m in sys.modules)),"
             " file=sys.stderr)")
    args = ["query", "a dog on a beach", "--kind", "text", "--json", "--library", str(library.root)]
    cwd = Path(__file__).resolve().parents[1]
    quick = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=cwd, check=True)
    assert json.loads(quick.stderr.strip().splitlines()[-1]) == []
    normal = subprocess.run([sys.executable, "-c", probe, *args, "--device", "cpu"], capture_output=True, text=True,
                            cwd=cwd, check=True)
    assert "sqlalchemy" in json.loads(normal.stderr.strip().splitlines()[-1])  # an override takes the normal path
    quick_hits, normal_hits = json.loads(quick.stdout), json.loads(normal.stdout)
    assert [(h["rank"], h["vector_id"], h["text"]) for h in quick_hits] == \
           [(h["rank"], h["vector_id"], h["text"]) for h in normal_hits]


def test_the_jrsearch_command_ends_at_once_after_a_quick_answer_with_all_of_it_printed(library):
    """The entry point ends the process right after a quick answer (no interpreter teardown): what
    was printed, on stdout and stderr, must all be there, and the status must be 0."""
    args = ["query", "海滩上的狗", "--kind", "text", "--library", str(library.root)]
    ran = subprocess.run([sys.executable, "-m", "jrsearch.cli.main", *args, "--json"], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    in_process = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(ran.stdout) == json.loads(in_process.stdout) and len(json.loads(ran.stdout)) == 10
    assert ran.stderr.startswith("note: ") and "English-only" in ran.stderr  # the language hint, after the results
    table = subprocess.run([sys.executable, "-m", "jrsearch.cli.main", *args, "-k", "3"], capture_output=True,
                           text=True)
    assert table.returncode == 0 and table.stdout.count("\n") >= 3
