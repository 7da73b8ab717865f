"""End to end through the Python API with the tiny model: index, change, break, resume."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image, require_coco_images
from PIL import Image

from jrsearch.indexer.pipeline import IndexOptions, run_index
from jrsearch.retrieval.engine import SearchEngine
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.request import Filters
from jrsearch.retrieval.types import MediaKind


def index(lib_dir: Path, encoder, *roots: Path, **options):
    library = Library.open(lib_dir, create=True)
    try:
        return run_index(library, encoder, list(roots), IndexOptions(batch_size=4, **options))
    finally:
        library.close()


def consistent(lib_dir: Path, kind: str = "image") -> int:
    """The FAISS index a reader gets holds exactly the committed vectors; returns their count."""
    library = Library.open(lib_dir)
    try:
        ids, _ = library.shards.stored(kind)
        index = library.index(kind)
        got = faiss_ids(index)
        assert got == set(ids.tolist())
        return len(ids)
    finally:
        library.close()


def faiss_ids(index) -> set[int]:
    import faiss

    inner = index.index
    id_map = faiss.vector_to_array(faiss.downcast_index(inner).id_map)
    return set(id_map.tolist())


def test_index_then_query_every_way(tmp_path, photos, tiny_encoder):
    lib = tmp_path / "lib"
    (tmp_path / "caps.txt").write_text("a red square\n\na blue circle\nthe third caption\n")
    report = index(lib, tiny_encoder, photos, tmp_path / "caps.txt")
    assert report.indexed == 13 and not report.failed

    engine = SearchEngine(Library.open(lib), encoder=tiny_encoder)
    for path in sorted(photos.rglob("*.jpg")):
        results = engine.search(engine.embed("image", path), MediaKind.IMAGE, top_k=3)
        assert results[0].path == str(path) and results[0].score == pytest.approx(1.0, abs=1e-4)
        assert [r.rank for r in results] == [1, 2, 3]
        assert results[0].score >= results[1].score >= results[2].score

    by_text = engine.search(engine.embed_text("a photo"), MediaKind.IMAGE, top_k=5)
    assert len(by_text) == 5 and len({r.path for r in by_text}) == 5

    texts = engine.search(engine.embed("image", photos / "img01.jpg"), MediaKind.TEXT, top_k=10)
    assert sorted((r.line, r.text) for r in texts) == [(1, "a red square"), (3, "a blue circle"),
                                                      (4, "the third caption")]
    caption = engine.search(engine.embed_text("a blue circle"), MediaKind.TEXT, top_k=1)[0]
    assert caption.text == "a blue circle" and caption.score == pytest.approx(1.0, abs=1e-4)


def test_path_filters(tmp_path, photos, tiny_encoder):
    lib = tmp_path / "lib"
    index(lib, tiny_encoder, photos)
    engine = SearchEngine(Library.open(lib), encoder=tiny_encoder)
    query = engine.embed_text("anything")
    under = engine.search(query, top_k=10, path_filter=Filters.make(under=photos / "sub"))
    assert {Path(r.path).parent.name for r in under} == {"sub"} and len(under) == 4
    globbed = engine.search(query, top_k=10, path_filter=Filters.make(glob="img1*.jpg"))
    assert sorted(Path(r.path).name for r in globbed) == ["img10.jpg", "img11.jpg"]


def test_reindex_add_modify_delete_touch(tmp_path, photos, tiny_encoder):
    lib = tmp_path / "lib"
    assert index(lib, tiny_encoder, photos).indexed == 12

    again = index(lib, tiny_encoder, photos)
    assert (again.indexed, again.unchanged, again.removed) == (0, 12, 0)

    make_image(photos / "new.png", seed=100)
    make_image(photos / "img02.jpg", seed=200)  # same name, new picture
    os.utime(photos / "img02.jpg", ns=(1, 1))
    (photos / "img04.jpg").unlink()
    os.utime(photos / "img05.jpg", ns=(2, 2))  # touched: same bytes, new mtime
    report = index(lib, tiny_encoder, photos)
    assert (report.indexed, report.removed, report.unchanged) == (2, 1, 10)
    assert consistent(lib) == 12

    engine = SearchEngine(Library.open(lib), encoder=tiny_encoder)
    top = engine.search(engine.embed("image", photos / "img02.jpg"), top_k=1)[0]
    assert top.path == str(photos / "img02.jpg") and top.score == pytest.approx(1.0, abs=1e-4)
    paths = {r.path for r in engine.search(engine.embed_text("x"), top_k=50)}
    assert str(photos / "img04.jpg") not in paths and str(photos / "new.png") in paths


def test_bad_files_are_recorded_and_never_stop_the_run(tmp_path, tiny_encoder, monkeypatch):
    root = tmp_path / "mixed"
    make_image(root / "good.jpg", seed=1)
    (root / "empty.jpg").write_bytes(b"")
    (root / "random.png").write_bytes(os.urandom(2048))
    (root / "text-named.jpg").write_text("I am not a picture")
    full = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    make_image(root / "bomb.png", seed=2, size=(240, 240))
    monkeypatch.setattr("jrsearch.retrieval.imageio.MAX_PIXELS", 200 * 200)
    (root / "huge.jpg").write_bytes(full * 40)
    monkeypatch.setattr("jrsearch.indexer.images.MAX_IMAGE_BYTES", len(full) * 20)

    report = index(tmp_path / "lib", tiny_encoder, root)
    failed = {Path(p).name: e for p, e in report.failed}
    assert report.indexed == 1
    assert set(failed) == {"empty.jpg", "random.png", "text-named.jpg", "truncated.jpg", "bomb.png", "huge.jpg"}
    assert "too large" in failed["huge.jpg"]
    assert "empty" in failed["empty.jpg"]
    assert "not an image" in failed["random.png"] and "not an image" in failed["text-named.jpg"]
    assert "truncated" in failed["truncated.jpg"]
    assert "decompression bomb" in failed["bomb.png"]

    library = Library.open(tmp_path / "lib")
    assert library.status()["items"]["image"] == {"indexed": 1, "failed": 6}
    again = run_index(library, tiny_encoder, [root])  # failures are remembered, not retried
    assert (again.indexed, again.unchanged, len(again.failed)) == (0, 7, 0)
    monkeypatch.setattr("jrsearch.retrieval.imageio.MAX_PIXELS", 10**9)  # the limit raised: the bomb now opens
    retried = run_index(library, tiny_encoder, [root], IndexOptions(retry_failed=True))
    assert (retried.indexed, retried.unchanged, len(retried.failed)) == (1, 1, 5)
    assert library.status()["items"]["image"] == {"indexed": 2, "failed": 5}


def test_image_modes_and_exif_orientation(tmp_path, tiny_encoder):
    root = tmp_path / "modes"
    make_image(root / "palette.png", 1, mode="P")
    make_image(root / "rgba.png", 2, mode="RGBA")
    make_image(root / "cmyk.jpg", 3, mode="CMYK")
    make_image(root / "grey.png", 4, mode="L")
    Image.fromarray(np.arange(64 * 96, dtype=np.uint16).reshape(64, 96) * 10).save(root / "deep.png")
    assert Image.open(root / "deep.png").mode.startswith("I")
    rotated = Image.new("RGB", (300, 150), "red")  # big enough to be decoded at a reduced (draft) scale
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees when displayed
    rotated.save(root / "exif.jpg", exif=exif)
    make_image(root / "no_extension", 5, fmt="PNG")  # recognised by content

    report = index(tmp_path / "lib", tiny_encoder, root)
    assert report.indexed == 7 and not report.failed
    library = Library.open(tmp_path / "lib")
    sizes = {Path(i.path).name: (i.width, i.height) for i in library.items()}
    assert sizes["exif.jpg"] == (150, 300)  # full size, upright: width and height swapped
    assert sizes["palette.png"] == (96, 64)


def test_walk_skips_hidden_and_survives_symlink_loops(tmp_path, tiny_encoder):
    root = tmp_path / "tree"
    make_image(root / "a" / "one.jpg", 1)
    make_image(root / ".hidden" / "two.jpg", 2)
    make_image(root / "a" / ".three.jpg", 3)
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    (root / "notes.txt").write_text("not a caption file unless named")
    report = index(tmp_path / "lib", tiny_encoder, root)
    assert report.indexed == 1

    with_hidden = index(tmp_path / "lib2", tiny_encoder, root, include_hidden=True)
    assert with_hidden.indexed == 3


def test_text_corpus_formats(tmp_path, tiny_encoder):
    (tmp_path / "c.jsonl").write_text('{"text": "first"}\n\n{"caption": "second"}\n"third"\n')
    (tmp_path / "c.tsv").write_text("id\tcaption\n1\talpha\n2\tbeta\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{broken\n')
    report = index(tmp_path / "lib", tiny_encoder, tmp_path / "c.jsonl", tmp_path / "c.tsv", tmp_path / "bad.jsonl")
    assert report.indexed == 2
    assert report.failed == [(str(tmp_path / "bad.jsonl"), "line 2: invalid JSON (Expecting property name "
                                                          "enclosed in double quotes)")]
    engine = SearchEngine(Library.open(tmp_path / "lib"), encoder=tiny_encoder)
    texts = {r.text for r in engine.search(engine.embed_text("q"), MediaKind.TEXT, top_k=10)}
    assert texts == {"first", "second", "third", "alpha", "beta"}


def test_interrupted_run_keeps_committed_batches_and_resumes(tmp_path, tiny_encoder, monkeypatch):
    root = tmp_path / "many"
    for i in range(20):
        make_image(root / f"{i:02d}.jpg", seed=i)
    calls = {"n": 0}
    real = tiny_encoder.encode_images

    def flaky(batch):
        calls["n"] += len(batch) > 1  # the warm-up's one blank image is not a batch
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(tiny_encoder, "encode_images", flaky)
    with pytest.raises(KeyboardInterrupt):
        index(tmp_path / "lib", tiny_encoder, root)
    assert consistent(tmp_path / "lib") == 8  # two batches of 4 were committed and indexed

    monkeypatch.setattr(tiny_encoder, "encode_images", real)
    report = index(tmp_path / "lib", tiny_encoder, root)
    assert (report.indexed, report.unchanged) == (12, 8)
    assert consistent(tmp_path / "lib") == 20


def test_stale_index_file_is_rebuilt_from_the_store(tmp_path, photos, tiny_encoder):
    lib = tmp_path / "lib"
    index(lib, tiny_encoder, photos)
    saved = lib / "index" / "image.faiss"
    stale = saved.read_bytes()
    make_image(photos / "late.jpg", seed=77)
    index(lib, tiny_encoder, photos)
    saved.write_bytes(stale)  # as if killed after committing rows but before replacing the file
    with sqlite3.connect(lib / "library.db") as db:
        db.execute("UPDATE index_state SET built_generation = built_generation - 1 WHERE kind = 'image'")
    assert consistent(lib) == 13


@pytest.mark.slow
def test_ivf_index_recall_against_exact_on_clustered_vectors(tmp_path):
    from jrsearch.retrieval.index import VectorIndex, choose_factory

    rng = np.random.default_rng(0)
    dim, n, clusters = 64, 60_000, 200
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    queries = vectors[rng.choice(n, 200, replace=False)] + 0.05 * rng.normal(size=(200, dim)).astype(np.float32)
    ids = np.arange(n) + 1000

    factory = choose_factory(n, dim)
    assert factory.startswith("IVF")
    approx = VectorIndex.build(vectors, ids, dim, factory)
    exact = VectorIndex.build(vectors, ids, dim, "IDMap,Flat")
    _, got = approx.search(queries, 10)
    _, want = exact.search(queries, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    print(f"{factory} nprobe={approx.nprobe}: recall@10 vs exact = {recall:.3f}")
    assert recall >= 0.9

    approx.save(tmp_path / "ivf.faiss")
    loaded = VectorIndex.load(tmp_path / "ivf.faiss", factory)
    assert np.array_equal(loaded.search(queries[:5], 10)[1], got[:5])


def test_index_type_follows_collection_size(tmp_path, photos, tiny_encoder, monkeypatch):
    monkeypatch.setattr("jrsearch.retrieval.index.EXACT_MAX", 8)
    lib = tmp_path / "lib"
    (photos / "sub").rename(tmp_path / "later")  # index 8 first: exact
    index(lib, tiny_encoder, photos)
    assert Library.open(lib).status()["indexes"]["image"]["factory"] == "IDMap,Flat"
    shutil.move(tmp_path / "later", photos / "sub")
    index(lib, tiny_encoder, photos)  # 12 > 8: retrained as IVF
    status = Library.open(lib).status()["indexes"]["image"]
    assert status["factory"].startswith("IVF") and status["vectors"] == 12 and status["trained_on"] == 12
    engine = SearchEngine(Library.open(lib), encoder=tiny_encoder)
    first = engine.search(engine.embed("image", photos / "sub" / "img00.jpg"), top_k=1)[0]
    assert first.path == str(photos / "sub" / "img00.jpg")


def test_real_coco_images_find_themselves_first(tmp_path, tiny_encoder):
    images = require_coco_images()
    index(tmp_path / "lib", tiny_encoder, images)
    engine = SearchEngine(Library.open(tmp_path / "lib"), encoder=tiny_encoder)
    for path in sorted(images.glob("*.jpg")):
        assert engine.search(engine.embed("image", path), top_k=1)[0].path == str(path)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_int8_precision_embeds_images_and_texts_close_to_fp32(tiny_encoder, photos, backend):
    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder
    from jrsearch.retrieval.imageio import open_image

    int8 = load_encoder(TINY_TEST_MODEL, device="cpu", precision="int8", backend=backend)
    assert int8.backend == backend
    batch = [tiny_encoder.preprocess(open_image(p)) for p in sorted(photos.rglob("*.jpg"))]
    agreement = np.sum(int8.encode_images(batch) * tiny_encoder.encode_images(batch), axis=1)
    assert agreement.min() > 0.95
    texts = int8.encode_texts(["a dog", "a cat"])
    if backend == "torch":  # torch quantises the image tower only
        assert np.allclose(texts, tiny_encoder.encode_texts(["a dog", "a cat"]), atol=1e-5)
    else:
        assert np.sum(texts * tiny_encoder.encode_texts(["a dog", "a cat"]), axis=1).min() > 0.95


def test_engine_prefers_the_exported_numpy_text_tower(tmp_path, photos, tiny_encoder, monkeypatch):
    from jrsearch.retrieval.query_model import export_text_tower

    lib = tmp_path / "lib"
    index(lib, tiny_encoder, photos)
    engine = SearchEngine(Library.open(lib))
    assert engine.text_tower is not None  # shared in the model cache when torch loaded the model
    monkeypatch.setenv("JRSEARCH_CACHE", str(tmp_path / "empty-cache"))
    engine = SearchEngine(Library.open(lib))
    assert engine.text_tower is None  # no shared export, none in the library
    export_text_tower(tiny_encoder, lib)  # a library written by an older jrsearch carries its own
    engine = SearchEngine(Library.open(lib))
    vector = engine.embed_text("a dog on a beach")
    assert engine._encoder is None  # answered without loading torch's model
    assert float(vector @ tiny_encoder.encode_texts(["a dog on a beach"])[0]) > 0.9999
