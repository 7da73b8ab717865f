"""Exact copies shown as one result (CLI, API, cold path), and `jrsearch duplicates`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import jrsearch, make_client, make_image


@pytest.fixture(scope="module")
def copies_library(tmp_path_factory, tiny_encoder):
    """Six distinct images, one of them (`a.png`) in three places; the numpy text tower exported
    so the CLI's cold path answers text queries."""
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.query_model import export_text_tower

    root = tmp_path_factory.mktemp("copies")
    media = root / "media"
    original = make_image(media / "a.png", seed=1)
    shutil.copy(original, media / "b_copy.png")
    (media / "sub").mkdir()
    shutil.copy(original, media / "sub" / "c_copy.png")
    for i in range(5):
        make_image(media / f"other{i}.png", seed=10 + i)
    library = Library.open(root / "lib", create=True)
    assert not run_index(library, tiny_encoder, [media]).failed
    export_text_tower(tiny_encoder, library.root)
    return Library.open(root / "lib"), media


def test_exact_copies_are_one_result_carrying_the_other_paths(copies_library, tiny_encoder):
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.request import SearchRequest
    from jrsearch.retrieval.service import LibraryService

    library, media = copies_library
    service = LibraryService(library, SearchEngine(library, encoder=tiny_encoder))
    copies = {str(media / "a.png"), str(media / "b_copy.png"), str(media / "sub" / "c_copy.png")}
    results = service.search(service.embed("image", media / "a.png"), SearchRequest(top_k=6)).results
    # all six distinct images, the copied one once, first, with its two other paths
    assert len(results) == 6 and len({r.path for r in results}) == 6
    first = results[0]
    assert first.path in copies and set(first.copies) == copies - {first.path}
    assert all(r.copies == () and r.path not in copies for r in results[1:])
    assert first.to_json()["copies"] == sorted(first.copies) and "copies" not in results[1].to_json()
    # fewer results asked for than stored vectors: still distinct files
    assert [r.path for r in service.search(service.embed("image", media / "a.png"),
                                           SearchRequest(top_k=2)).results] == [r.path for r in results[:2]]


def test_copies_in_the_api_the_cli_and_the_cold_path(copies_library, tiny_encoder):
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.query_model import TextTower
    from jrsearch.retrieval.quick_search import quick_text_search
    from jrsearch.retrieval.request import SearchRequest

    library, _ = copies_library
    client = make_client(library, tiny_encoder)
    body = client.get("/api/search", params={"q": "a photo", "top_k": 10}).json()
    assert len(body["results"]) == 6
    grouped = [r for r in body["results"] if r["copies"]]
    assert len(grouped) == 1 and len(grouped[0]["copies"]) == 2
    assert all(r["copies"] == [] for r in body["results"] if r is not grouped[0])

    listed = json.loads(jrsearch("query", "a photo", "-k", "10", "--json", lib=library.root).output)
    assert [r["path"] for r in listed] == [r["path"] for r in body["results"]]
    assert [r.get("copies", []) for r in listed] == [r["copies"] for r in body["results"]]
    table = jrsearch("query", "a photo", "-k", "10", lib=library.root).output
    assert "3 copies" in table

    tower = TextTower.load(library.root, tiny_encoder.spec, tiny_encoder.dim)
    assert tower is not None
    quick = quick_text_search(library.root, "a photo", SearchRequest(top_k=10))
    engine = SearchEngine(library, encoder=tiny_encoder)
    assert quick == engine.search(tower.encode_texts(["a photo"])[0], top_k=10)


def test_a_version_4_library_gains_the_hash_index(tmp_path, tiny_encoder):
    import sqlite3

    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library

    make_image(tmp_path / "media" / "a.png", seed=1)
    library = Library.open(tmp_path / "lib", create=True)
    run_index(library, tiny_encoder, [tmp_path / "media"])
    library.close()
    with sqlite3.connect(tmp_path / "lib" / "library.db") as db:
        db.execute("DROP INDEX ix_items_hash")
        db.execute("PRAGMA user_version = 4")
    Library.open(tmp_path / "lib").close()
    with sqlite3.connect(tmp_path / "lib" / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
        plan = db.execute("EXPLAIN QUERY PLAN SELECT path FROM items WHERE content_hash IN ('x')").fetchall()
    assert any("ix_items_hash" in str(step) for step in plan)


def test_the_neighbour_pass_finds_planted_copies_and_nothing_else():
    """Synthetic unit vectors with planted near copies (cosine ~0.98), searched through an IVF index."""
    import numpy as np

    from jrsearch.retrieval.duplicates import components, near_pairs
    from jrsearch.retrieval.index import ArraySource, VectorIndex

    rng = np.random.default_rng(0)
    base = rng.standard_normal((2000, 32)).astype(np.float32)
    planted = {i: 2000 + n for n, i in enumerate(range(0, 300, 3))}  # 100 originals get a copy each
    copies = base[list(planted)] + 0.2 * rng.standard_normal((len(planted), 32)).astype(np.float32) / np.sqrt(32)
    vectors = np.concatenate([base, copies])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(len(vectors), dtype=np.int64) + 7  # ids need not be positions
    index = VectorIndex.build(vectors, ids, 32, factory="IVF16,Flat")
    a, b, s = near_pairs(index, ArraySource(ids, vectors).batches(500), threshold=0.95, k=5)
    found = set(zip(a.tolist(), b.tolist(), strict=True))
    assert found == {(i + 7, j + 7) for i, j in planted.items()}
    assert np.all(s >= 0.95) and np.all(s <= 1.0001)
    groups = components(np.array([0, 1, 5, 9]), np.array([1, 2, 6, 5]))
    assert sorted(sorted(g.tolist()) for g in groups) == [[0, 1, 2], [5, 6, 9]]


@pytest.fixture(scope="module")
def variants_library(tmp_path_factory, tiny_encoder):
    """Four originals, each resized to half, recompressed (JPEG q=30) and cropped to 90 %, and one
    byte-for-byte copy of the first."""
    from PIL import Image

    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library

    root = tmp_path_factory.mktemp("variants")
    media = root / "media"
    for i in range(4):
        original = make_image(media / f"o{i}.png", seed=100 + i, size=(192, 128))
        image = Image.open(original)
        image.resize((96, 64)).save(media / f"o{i}_resized.png")
        image.save(media / f"o{i}_q30.jpg", quality=30)
        image.crop((10, 6, 182, 122)).save(media / f"o{i}_crop.png")
    shutil.copy(media / "o0.png", media / "o0_copy.png")
    library = Library.open(root / "lib", create=True)
    assert not run_index(library, tiny_encoder, [media]).failed
    library.close()
    return root / "lib", media


def pair_scores(groups: list[dict], media: Path) -> tuple[float, float]:
    """Pairwise precision and recall of the groups against the truth: files share an original."""
    from itertools import combinations

    def original(path: str) -> str:
        return Path(path).stem.split("_")[0]

    files = [p.name for p in media.iterdir()]
    truth = {frozenset(pair) for pair in combinations(files, 2) if original(pair[0]) == original(pair[1])}
    found = {frozenset((Path(a).name, Path(b).name)) for g in groups for a, b in combinations(g["paths"], 2)}
    return len(found & truth) / max(1, len(found)), len(found & truth) / len(truth)


def test_duplicates_command_groups_copies_and_variants(variants_library, capsys):
    lib, media = variants_library
    groups = json.loads(jrsearch("duplicates", "--json", lib=lib).output)
    precision, recall = pair_scores(groups, media)
    with capsys.disabled():  # random weights (tiny-test): every picture is close to every other
        print(f"\nduplicates at the default threshold, tiny-test: precision {precision:.2f} recall {recall:.2f}")
    assert recall == 1.0
    for group in groups:
        assert all(pair["similarity"] >= 0.95 for pair in group["pairs"])
        assert {p for pair in group["pairs"] for p in (pair["a"], pair["b"])} == set(group["paths"])
    strict = json.loads(jrsearch("duplicates", "--json", "--threshold", "0.999", lib=lib).output)
    strict_precision, strict_recall = pair_scores(strict, media)
    with capsys.disabled():
        print(f"at 0.999: precision {strict_precision:.2f} recall {strict_recall:.2f}")
    assert "no duplicates" in jrsearch("duplicates", "--kind", "audio", lib=lib).output


def test_exact_copies_are_an_exact_group(copies_library):
    library, media = copies_library
    groups = json.loads(jrsearch("duplicates", "--json", "--threshold", "0.99999", lib=library.root).output)
    assert [(g["exact"], sorted(g["paths"])) for g in groups] == [
        (True, sorted(str(p) for p in (media / "a.png", media / "b_copy.png", media / "sub" / "c_copy.png")))]
    assert all(pair["similarity"] > 0.9999 for pair in groups[0]["pairs"])
    table = jrsearch("duplicates", "--threshold", "0.99999", lib=library.root).output
    assert "group 1: 3 files (exact copies)" in table and "c_copy.png" in table
