"""Retrieval benchmarks: split loaders, honesty about missing images, the embedding cache, exact vs
index ranking, and a structural end-to-end run over the real 25,000-caption COCO split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import COCO_DIR, make_image, require_coco_images
from typer.testing import CliRunner

from jrsearch.benchmarks.embedding_cache import EmbeddingCache
from jrsearch.benchmarks.retrieval_bench import COLUMNS, BenchOptions, index_ranks, run_benchmark
from jrsearch.benchmarks.splits import load_caption_tsv, load_karpathy_json, load_split
from jrsearch.cli.bench import bench_app
from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.metrics import cross_modal_ranks

REAL_IDS = ["60623", "165547", "354533", "386164", "562207", "579664"]


def require_coco_captions() -> Path:
    captions = COCO_DIR / "captions.tsv"
    if not captions.is_file():
        pytest.skip(f"real COCO Karpathy captions not found at {captions} (the shared data folder is absent)")
    return captions


def write_tsv(path: Path, rows: list[tuple[int, int, str]]) -> Path:
    path.write_text("image_id\tcaption_id\tcaption\n" + "".join(f"{i}\t{c}\t{t}\n" for i, c, t in rows))
    return path


@pytest.fixture
def small_split(tmp_path: Path):
    """Three images on disk with two captions each, as a TSV split."""
    images = tmp_path / "val2014"
    for n, image_id in enumerate((11, 22, 33)):
        make_image(images / f"COCO_val2014_{image_id:012d}.jpg", seed=n)
    rows = [(i, 100 * i + k, f"caption {k} of image {i}") for i in (11, 22, 33) for k in range(2)]
    return load_caption_tsv(write_tsv(tmp_path / "split.tsv", rows)), images


class CountingEncoder:
    """The tiny encoder, counting what it is asked to embed."""

    def __init__(self, encoder) -> None:
        self.inner, self.images, self.texts = encoder, 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_images(self, batch):
        self.images += len(batch)
        return self.inner.encode_images(batch)

    def encode_texts(self, texts):
        self.texts += len(texts)
        return self.inner.encode_texts(texts)


# --- split loaders ---------------------------------------------------------------------------------

def test_real_karpathy_tsv():
    split = load_caption_tsv(require_coco_captions())
    assert (len(split.images), len(split.captions)) == (5000, 25000)
    assert np.array_equal(split.caption_image, np.repeat(np.arange(5000), 5))
    assert split.images[0].image_id == "391895" and split.caption_ids[0] == "770337"
    assert split.captions[0] == "A man with a red helmet on a small moped on a dirt road ."
    assert split.images[1].filename == "COCO_val2014_000000060623.jpg"
    assert {image.image_id for image in split.images} >= set(REAL_IDS)


def test_tsv_keeps_quotes_and_groups_rows(tmp_path: Path):
    split = load_caption_tsv(write_tsv(tmp_path / "s.tsv", [(5, 1, 'a "quoted" sign'), (5, 2, "b"), (7, 3, "c")]))
    assert split.captions == ['a "quoted" sign', "b", "c"]
    assert split.caption_image.tolist() == [0, 0, 1]
    with pytest.raises(JrsearchError, match="not consecutive"):
        load_caption_tsv(write_tsv(tmp_path / "bad.tsv", [(5, 1, "a"), (7, 2, "b"), (5, 3, "c")]))


def test_karpathy_json_coco_and_flickr(tmp_path: Path):
    sentences = lambda n: [{"raw": f"s{k}", "sentid": k} for k in range(n)]  # noqa: E731
    coco = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "COCO_val2014_000000000001.jpg", "cocoid": 1, "split": "train",
         "sentences": sentences(5)},
        {"filepath": "val2014", "filename": "COCO_val2014_000000000002.jpg", "cocoid": 2, "split": "test",
         "sentences": sentences(7)},
        {"filepath": "val2014", "filename": "COCO_val2014_000000000003.jpg", "cocoid": 3, "split": "test",
         "sentences": sentences(5)}]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(coco))
    split = load_split(path)
    assert [i.image_id for i in split.images] == ["2", "3"]  # test images only, in file order
    assert len(split.captions) == 10  # the seven-caption image keeps its first five
    assert split.name == "coco-karpathy-test"
    # IMAGES may be the COCO root: the Karpathy file's folder is tried too.
    make_image(tmp_path / "val2014" / "COCO_val2014_000000000002.jpg", seed=0)
    assert split.images[0].locate(tmp_path) == tmp_path / "val2014" / "COCO_val2014_000000000002.jpg"

    flickr = {"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "split": "test", "sentences": sentences(5)}]}
    flickr_path = tmp_path / "dataset_flickr30k.json"
    flickr_path.write_text(json.dumps(flickr))
    split = load_karpathy_json(flickr_path)
    assert split.images[0].image_id == "1000092795" and split.name == "flickr30k-karpathy-test"


def test_coco_captions_json_with_ids(tmp_path: Path):
    captions = {"images": [{"id": 9, "file_name": "COCO_val2014_000000000009.jpg"},
                           {"id": 4, "file_name": "COCO_val2014_000000000004.jpg"}],
                "annotations": [{"image_id": 9, "id": 30, "caption": "late"},
                                {"image_id": 9, "id": 10, "caption": "early"},
                                {"image_id": 4, "id": 20, "caption": "four"}]}
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(captions))
    with pytest.raises(JrsearchError, match="--ids"):
        load_split(path)
    ids = tmp_path / "ids.txt"
    ids.write_text("4\n9\n9\n")
    split = load_split(path, ids)
    assert [i.image_id for i in split.images] == ["4", "9"]
    assert split.captions == ["four", "early", "late"]  # by annotation id within an image
    ids.write_text("4\n5\n")
    with pytest.raises(JrsearchError, match="not in"):
        load_split(path, ids)


# --- the run ---------------------------------------------------------------------------------------

def test_missing_and_unreadable_images_stop_the_run_unless_partial(tmp_path: Path, small_split, tiny_encoder):
    split, images = small_split
    (images / "COCO_val2014_000000000022.jpg").unlink()
    (images / "COCO_val2014_000000000033.jpg").write_bytes(b"not a jpeg")
    cache = EmbeddingCache(tmp_path / "cache", "tiny")
    with pytest.raises(JrsearchError, match=r"1 of 3 images are missing.*--allow-partial"):
        run_benchmark(split, images, tiny_encoder, cache, BenchOptions("coco", "5k"))
    (images / "COCO_val2014_000000000022.jpg").write_bytes(b"")
    with pytest.raises(JrsearchError, match="2 unreadable"):
        run_benchmark(split, images, tiny_encoder, cache, BenchOptions("coco", "5k"))

    report = run_benchmark(split, images, tiny_encoder, cache, BenchOptions("coco", "5k", allow_partial=True))
    assert report.partial and (report.images_evaluated, report.captions_evaluated) == (1, 2)
    assert sorted(Path(p.path).name for p in report.unreadable) == \
        ["COCO_val2014_000000000022.jpg", "COCO_val2014_000000000033.jpg"]
    ours = [row for row in report.rows if row.ranked_by != "published"]
    assert ours and all(row.partial for row in ours)
    markdown = report.to_markdown()
    assert "PARTIAL — not comparable" in markdown and "1 of 3 images evaluated (0 missing, 2 unreadable)" in markdown
    assert markdown.count("| PARTIAL tiny-test") == 1 and "| tiny-test" not in markdown  # no unmarked row


def test_cache_skips_known_files_and_notices_changed_ones(tmp_path: Path, small_split, tiny_encoder):
    split, images = small_split
    options = BenchOptions("coco", "5k")
    first = CountingEncoder(tiny_encoder)
    report = run_benchmark(split, images, first, EmbeddingCache(tmp_path / "cache", "tiny"), options)
    assert (first.images, first.texts) == (3, 6) and not report.partial

    again = CountingEncoder(tiny_encoder)
    repeat = run_benchmark(split, images, again, EmbeddingCache(tmp_path / "cache", "tiny"), options)
    assert (again.images, again.texts) == (0, 0)
    assert repeat.rows[0].image_to_text == report.rows[0].image_to_text

    changed = images / "COCO_val2014_000000000011.jpg"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = CountingEncoder(tiny_encoder)
    run_benchmark(split, images, third, EmbeddingCache(tmp_path / "cache", "tiny"), options)
    assert (third.images, third.texts) == (1, 0)
    assert not list((tmp_path / "cache").glob("*.tmp"))  # written atomically, nothing left behind


def test_index_ranking_matches_exact_on_a_flat_index():
    rng = np.random.default_rng(3)
    images = rng.standard_normal((40, 16)).astype(np.float32)
    texts = np.repeat(images, 3, axis=0) + rng.standard_normal((120, 16)).astype(np.float32)
    caption_image = np.repeat(np.arange(40), 3)
    exact = cross_modal_ranks(images, texts, caption_image)
    ranks, label = index_ranks(images, texts, caption_image, BenchOptions("coco", "5k", index=True))
    assert label == "index: texts IDMap,Flat, images IDMap,Flat"
    assert np.array_equal(ranks.image_to_text, exact.image_to_text)
    assert np.array_equal(ranks.text_to_image, exact.text_to_image)


@pytest.mark.slow
def test_structural_run_over_the_real_split(tmp_path: Path):
    """The real 25,000-caption split, the six real images, the tiny model: counts and every field."""
    images, captions = require_coco_images(), require_coco_captions()
    args = ["coco", "--images", str(images), "--captions", str(captions), "--model", "tiny-test",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    runner = CliRunner()

    refused = runner.invoke(bench_app, args)
    assert refused.exit_code == 1 and "4,994 of 5,000 images are missing" in refused.output
    assert not (tmp_path / "out").exists()

    result = runner.invoke(bench_app, [*args, "--allow-partial", "--index", "--split", "1k"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "coco-1k-tiny-test-PARTIAL.json").read_text())
    assert report["partial"] is True
    assert (report["images"]["in_split"], report["images"]["evaluated"], len(report["images"]["missing"])) == \
        (5000, 6, 4994)
    assert (report["captions"]["in_split"], report["captions"]["evaluated"]) == (25000, 30)
    assert {"benchmark", "split", "split_file", "model", "pretrained", "precision", "device", "date", "versions",
            "rows", "folds", "fold_size", "seconds", "published_sources"} <= set(report)
    assert (report["benchmark"], report["split"], report["model"], report["pretrained"], report["fold_size"]) == \
        ("coco", "1k", "tiny-test", "", 1000)
    assert {"python", "jrsearch", "open_clip_torch", "torch", "numpy", "faiss"} <= set(report["versions"])
    assert [row["ranked_by"].split(":")[0] for row in report["rows"]] == ["exact", "index"]  # no 1K published rows
    for row in report["rows"]:
        assert row["partial"] is True
        assert set(row["image_to_text"]) == set(row["text_to_image"]) == set(COLUMNS)
        assert all(isinstance(v, float) for v in row["image_to_text"].values())
    exact = [f for f in report["folds"] if f["ranked_by"] == "exact"]
    assert sum(f["images"] for f in exact) == 6 and sum(f["captions"] for f in exact) == 30
    assert sorted(i for f in exact for i in f["ranks"]["image_ids"]) == sorted(REAL_IDS)
    assert all(1 <= r <= f["captions"] for f in exact for r in f["ranks"]["image_to_text"])
    markdown = (tmp_path / "out" / "coco-1k-tiny-test-PARTIAL.md").read_text()
    assert markdown.count("| PARTIAL tiny-test") == 2 and "6 of 5,000 images evaluated (4,994 missing" in markdown
    assert "Image-to-Text R@1" in result.output and "Text-to-Image R@1" in result.output

    result = runner.invoke(bench_app, [*args, "--allow-partial", "--split", "5k", "--json"])
    assert result.exit_code == 0, result.output
    five_k = json.loads(result.stdout)
    assert five_k["fold_size"] is None and len(five_k["folds"]) == 1
    assert five_k["seconds"]["embed_images"] < 5  # all six images came from the cache
    published = [row for row in five_k["rows"] if row["ranked_by"] == "published"]
    assert any(row["model"] == "ViT-B-32/laion2b_s34b_b79k" for row in published)
    assert all(row["partial"] is False and row["source"] for row in published)


def make_flickr30k(root: Path) -> Path:
    """Three images in flickr30k-images/ with five captions each, and the Karpathy file beside them."""
    names = [f"{1000 + n}.jpg" for n in range(3)]
    for n, name in enumerate(names):
        make_image(root / "flickr30k-images" / name, seed=n)
    entries = [{"filename": name, "split": "test", "sentences": [{"raw": f"photo {n} take {k}", "sentid": 5 * n + k}
                                                                   for k in range(5)]}
               for n, name in enumerate(names)]
    (root / "dataset_flickr30k.json").write_text(json.dumps({"dataset": "flickr30k", "images": entries}))
    return root / "flickr30k-images"


def run_flickr30k(tmp_path: Path, *options: str) -> dict:
    result = CliRunner().invoke(bench_app, ["flickr30k", "--images", str(make_flickr30k(tmp_path / "flickr30k")),
                                            "--model", "tiny-test", "--cache-dir", str(tmp_path / "cache"), "--out",
                                            str(tmp_path / "out"), "--json", *options])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_flickr30k_command_finds_its_split_file_next_to_the_images(tmp_path: Path):
    report = run_flickr30k(tmp_path)
    assert (report["benchmark"], report["split"], report["partial"]) == ("flickr30k", "1k", False)
    assert (report["images"]["evaluated"], report["captions"]["evaluated"]) == (3, 15)
    assert report["rows"][0]["model"] == "tiny-test" and report["rows"][0]["partial"] is False
    assert any(row["ranked_by"] == "published" for row in report["rows"])
    assert (tmp_path / "out" / "flickr30k-1k-tiny-test.md").is_file()
    assert report["backend"] in ("onnx", "openvino")  # auto: the ONNX export, on the runtime measured faster


@pytest.mark.parametrize("backend, precision", [("torch", "fp32"), ("onnx", "int8")])
def test_bench_runs_the_model_on_the_backend_and_precision_asked_for(tmp_path: Path, backend: str, precision: str):
    from jrsearch.benchmarks import retrieval_bench

    loaded = []
    real = retrieval_bench.run_benchmark

    def spy(split, images, encoder, *args, **kwargs):
        loaded.append(encoder)
        return real(split, images, encoder, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrieval_bench, "run_benchmark", spy)
        report = run_flickr30k(tmp_path, "--backend", backend, "--precision", precision)
    assert (loaded[0].backend, report["backend"], report["precision"]) == (backend, backend, precision)
    assert getattr(loaded[0], "precision", "fp32") == precision  # the ONNX encoder's own: int8 ran int8
