"""Issue 22, bounded work per input: aspect-ratio bombs, text parsers, query files that are not
regular files or are huge."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import jrsearch
from PIL import Image

from jrsearch.indexer.pipeline import run_index
from jrsearch.retrieval.encoders.preprocess import ImagePreprocess
from jrsearch.retrieval.imageio import MAX_ASPECT, open_image
from jrsearch.retrieval.library import Library

CLIP_224 = ImagePreprocess((224, 224), (0.48, 0.46, 0.41), (0.27, 0.26, 0.28))


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_an_aspect_ratio_bomb_is_cropped_before_any_upscale(tmp_path, tiny_encoder):
    # 240 bytes; resizing its 1-pixel side to 224 would make a 224 x 8,960,000 image (6 GB)
    bomb = png(Image.new("RGB", (1, 40000), "white"))
    image = open_image(bomb, draft_size=224)
    assert image.size == (1, MAX_ASPECT) and image.info["full_size"] == (1, 40000)
    assert CLIP_224(image).shape == (3, 224, 224)

    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "line.png").write_bytes(bomb)
    library = Library.open(tmp_path / "lib", create=True)
    report = run_index(library, tiny_encoder, [tmp_path / "media"])
    assert report.indexed == 1 and not report.failed
    assert library.items()[0].details == {"width": 1, "height": 40000}


def test_cropping_a_long_image_keeps_what_the_model_sees():
    pixels = np.random.default_rng(0).integers(0, 256, (60, 60 * MAX_ASPECT + 240, 3), dtype=np.uint8)
    panorama = Image.fromarray(pixels)
    assert open_image(png(panorama)).width == 60 * MAX_ASPECT
    assert np.abs(CLIP_224(open_image(png(panorama))) - CLIP_224(panorama)).max() < 1e-4


def test_a_large_image_is_reduced_while_decoding():
    pixels = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    photo = Image.fromarray(pixels).resize((2000, 1600), Image.Resampling.BICUBIC)
    reduced = open_image(png(photo), draft_size=224)
    assert reduced.size == (666, 533) and reduced.info["full_size"] == (2000, 1600)  # by 3: short side >= 2 x 224
    assert np.abs(CLIP_224(reduced) - CLIP_224(photo)).mean() < 0.05  # of values spanning about 7


def test_hostile_text_corpora_are_recorded_failed_and_the_run_goes_on(tmp_path, tiny_encoder):
    big_field = tmp_path / "big.tsv"
    big_field.write_text("id\tcaption\n1\ta fine caption\n2\t" + "x" * (200 * 1024) + "\n")
    nested = tmp_path / "nested.jsonl"
    nested.write_text('{"text": "fine"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    long_line = tmp_path / "long.jsonl"
    long_line.write_text('{"text": "' + "y" * (2 << 20) + '"}\n')
    short_rows = tmp_path / "short.tsv"
    short_rows.write_text("id\tcaption\n1\n2\tthe only caption\n")
    good = tmp_path / "good.txt"
    good.write_text("a dog on a beach\n")
    library = Library.open(tmp_path / "lib", create=True)
    report = run_index(library, tiny_encoder, [big_field, nested, long_line, short_rows, good])
    failed = dict(report.failed)
    assert set(failed) == {str(big_field), str(nested), str(long_line)}
    assert failed[str(big_field)].startswith("line 3: ") and "at most 131,072 characters" in failed[str(big_field)]
    assert failed[str(nested)] == "line 2: JSON nested too deeply to read"
    assert failed[str(long_line)].startswith("line 1: 2,097,164 characters, over the 1,048,576")
    assert report.indexed == 2 and {f.path for f in library.items() if f.status == "indexed"} == {
        str(short_rows), str(good)}


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_query_files_that_are_not_regular_files_or_are_huge_are_named(tmp_path, modality):
    fifo, huge = tmp_path / "pipe.jpg", tmp_path / "huge.jpg"
    os.mkfifo(fifo)
    with huge.open("wb") as out:  # sparse: 1 GiB on paper, nothing on disk
        out.truncate(2**30)
    expected = {tmp_path: "is a folder", fifo: "is not a regular file (a named pipe (FIFO))",
                Path("/dev/zero"): "is not a regular file (a character device)",
                huge: "is 1.0 GiB, over the 64 MiB a query file may have",
                tmp_path / "missing.jpg": "does not exist"}
    for path, says in expected.items():
        result = jrsearch("query", f"--{modality}", str(path), lib=tmp_path / "lib", ok=False)
        assert result.exit_code == 1 and says in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
