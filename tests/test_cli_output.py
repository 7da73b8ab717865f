"""What a newcomer's shell sees: `query` piped (one result a line, never wrapped) and `-f` (paths
alone), on the cold path (a real `jrsearch` process) and the service path; `--version`; `serve` on a
port already taken."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
from helpers import Scene, jrsearch, make_image, make_video
from typer.testing import CliRunner

from jrsearch.cli.main import app

LONG_DIR = "/".join(["a-folder-with-a-rather-long-name-for-a-photo-archive"] * 5)  # > 200 characters


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_encoder) -> Path:
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.query_model import export_text_tower

    base = tmp_path_factory.mktemp("piped")
    for i in range(4):
        make_image(base / LONG_DIR / f"photo-{i}.jpg", seed=i)
    (base / "caps.txt").write_text("a dog\ton a beach\na red car\n")  # a tab inside a caption
    lib = Library.open(base / "lib", create=True)
    run_index(lib, tiny_encoder, [base / LONG_DIR, base / "caps.txt"])
    export_text_tower(tiny_encoder, lib.root)  # so a fresh `jrsearch query` answers on the cold path
    lib.close()
    return base / "lib"


def cold_query(library: Path, *args: str) -> subprocess.CompletedProcess:
    """`jrsearch query ...` in its own process, stdout a pipe (as in `jrsearch query ... | cat`)."""
    ran = subprocess.run([sys.executable, "-m", "jrsearch.cli.main", "query", *args, "--library", str(library)],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    assert ran.returncode == 0, ran.stderr
    return ran


def photos(library: Path) -> set[str]:
    return {str(p) for p in (library.parent / LONG_DIR).glob("*.jpg")}


def test_piped_cold_query_prints_one_unwrapped_line_per_result(library):
    lines = cold_query(library, "a photo", "-k", "4").stdout.splitlines()
    assert len(photos(library).pop()) > 200
    assert lines[0].split("\t")[:4] == ["#", "score", "path", "detail"]  # (+ taken: the files' mtime)
    rows = [line.split("\t") for line in lines[1:]]
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert {row[2] for row in rows} == photos(library)  # whole paths, not folded at 80 columns
    assert all(float(row[1]) <= float(prev[1]) for prev, row in pairwise(rows))


def test_piped_text_results_keep_a_caption_with_a_tab_on_one_line(library):
    lines = cold_query(library, "a dog", "--kind", "text").stdout.splitlines()
    assert len(lines) == 3  # the header and two captions
    details = sorted(line.split("\t")[3] for line in lines[1:])
    assert details == ["line 1: a dog\\x09on a beach", "line 2: a red car"]


def test_paths_only_prints_the_paths_alone_on_both_query_paths(library, tmp_path):
    cold = cold_query(library, "a photo", "-f").stdout
    assert cold.endswith("\n") and set(cold.splitlines()) == photos(library)
    example = sorted(photos(library))[0]
    service = jrsearch("query", "--image", example, "--paths-only", "-k", "2", "--backend", "torch", lib=library).stdout
    lines = service.splitlines()
    assert len(lines) == 2 and lines[0] == example and set(lines) <= photos(library)


def test_json_output_is_unchanged_by_a_pipe(library):
    hits = json.loads(cold_query(library, "a photo", "--json", "-k", "2").stdout)
    assert [h["rank"] for h in hits] == [1, 2] and {h["path"] for h in hits} <= photos(library)


def test_version_prints_the_package_version():
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"jrsearch {version('jrsearch')}\n"


def test_serve_on_a_busy_port_says_so_in_one_line_before_loading_anything(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port), "--library", str(tmp_path / "none")])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "serving on" not in result.output
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr and "--port" in result.stderr
    assert not (tmp_path / "none").exists()  # failed before opening (or creating) anything


def test_index_summary_counts_files_by_kind_captions_and_soundtracks(tmp_path):
    media = tmp_path / "media"
    for i in range(2):
        make_image(media / f"photo{i}.jpg", seed=i)
    make_video(media / "talk.mp4", [Scene(1.0, 1, 440.0), Scene(1.0, 2, 880.0)])  # several vectors, with sound
    make_video(media / "quiet.mp4", [Scene(1.0, 3, 0.0)], audio_codec=None)
    (tmp_path / "caps.txt").write_text("a dog on a beach\na red car\nthree bikes\n")
    result = jrsearch("index", str(media), str(tmp_path / "caps.txt"), "--model", "tiny-test", "--backend", "torch",
                      lib=tmp_path / "lib")
    summary, *notes = result.stdout.splitlines()
    assert summary.startswith("indexed 2 images, 2 videos, 3 captions from caps.txt, unchanged 0, removed 0, ")
    assert [n for n in notes if "soundtrack" in n] == [notes[0]] and notes[0].startswith(
        "note: 1 video soundtrack skipped: no audio tower")  # quiet.mp4 has no sound to skip
    assert "text      1 indexed (3 captions)" in jrsearch("status", lib=tmp_path / "lib").stdout
    again = json.loads(jrsearch("index", str(tmp_path / "caps.txt"), "--json", lib=tmp_path / "lib").stdout)
    assert (again["indexed"], again["indexed_kinds"], again["captions"], again["unchanged"]) == (0, {}, 0, 1)


def test_readme_lists_the_tests_that_skip_without_the_shared_data():
    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run([sys.executable, str(root / ".ci" / "shared-data-tests")], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "tests/test_indexing.py::test_real_coco_images_find_themselves_first" in listed
    readme = (root / "README.md").read_text()
    shown = [line[3:-1] for line in readme.splitlines() if line.startswith("- `tests/") and "::" in line]
    assert shown == listed and f"**Tests that need `../shared/data`.** {len(listed)} tests" in readme
