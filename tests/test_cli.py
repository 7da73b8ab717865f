"""The `jrsearch` command as a user runs it: output, JSON, errors, kill -9 and resume."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import jrsearch, make_image
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture
def indexed(tmp_path, photos) -> Path:
    lib = tmp_path / "lib"
    (tmp_path / "caps.txt").write_text("a dog on a beach\na red car\n")
    jrsearch("index", str(photos), str(tmp_path / "caps.txt"), "--model", "tiny-test", lib=lib)
    return lib


def test_index_query_status(indexed, photos, tmp_path):
    target = photos / "img05.jpg"
    hits = json.loads(jrsearch("query", "--image", str(target), "--json", "-k", "3", lib=indexed).stdout)
    assert hits[0]["path"] == str(target) and hits[0]["rank"] == 1
    assert set(hits[0]) >= {"rank", "score", "path", "kind", "item_id"} and hits[0]["kind"] == "image"

    texts = json.loads(jrsearch("query", "--image", str(target), "--kind", "text", "--json", lib=indexed).stdout)
    assert {t["text"] for t in texts} == {"a dog on a beach", "a red car"} and texts[0]["kind"] == "text"

    by_words = jrsearch("query", "a dog on a beach", "--under", str(photos / "sub"), lib=indexed).stdout
    assert "img00.jpg" in by_words and "img01.jpg" not in by_words

    status = json.loads(jrsearch("status", "--json", lib=indexed).stdout)
    assert (status["model"], status["pretrained"]) == ("tiny-test", "")
    assert status["indexes"]["image"]["factory"] == "IDMap,Flat"
    assert status["items"] == {"image": {"indexed": 12}, "text": {"indexed": 1}}
    assert status["status"] == {"indexed": 13} and status["bytes_on_disk"] > 0
    assert "IDMap,Flat" in jrsearch("status", lib=indexed).stdout


def test_wrong_model_is_one_clear_line_and_nothing_is_lost(indexed, photos):
    before = json.loads(jrsearch("status", "--json", lib=indexed).stdout)
    for command in (["query", "a dog", "--model", "ViT-B-32"],
                    ["index", str(photos), "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k"]):
        result = jrsearch(*command, lib=indexed, ok=False)
        assert result.exit_code == 1
        assert result.stderr.strip().count("\n") == 0
        assert "built with tiny-test, not ViT-B-32/laion2b_s34b_b79k" in result.stderr
        assert "Traceback" not in result.output
    after = json.loads(jrsearch("status", "--json", lib=indexed).stdout)
    assert after["items"] == before["items"]


def test_failures_are_listed_and_retried_on_request(tmp_path):
    lib, root = tmp_path / "lib", tmp_path / "pics"
    make_image(root / "ok.jpg", seed=3)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    first = json.loads(jrsearch("index", str(root), "--model", "tiny-test", "--json", lib=lib).stdout)
    assert [Path(f["path"]).name for f in first["failed"]] == ["broken.jpg"]
    status = jrsearch("status", "--failures", lib=lib).stdout
    assert "broken.jpg" in status and "--retry-failed" in status
    again = json.loads(jrsearch("index", str(root), "--json", lib=lib).stdout)
    assert (again["unchanged"], again["failed"]) == (2, [])
    retried = json.loads(jrsearch("index", str(root), "--retry-failed", "--json", lib=lib).stdout)
    assert retried["unchanged"] == 1 and [Path(f["path"]).name for f in retried["failed"]] == ["broken.jpg"]


def test_errors_name_the_path_and_the_remedy(tmp_path):
    result = jrsearch("index", str(tmp_path / "nope"), "--model", "tiny-test", lib=tmp_path / "lib", ok=False)
    assert result.exit_code == 1 and "nope does not exist" in result.stderr
    result = jrsearch("query", "x", lib=tmp_path / "empty", ok=False)
    assert result.exit_code == 1 and "no library at" in result.stderr and "jrsearch index" in result.stderr


def test_offline_pretrained_weights_fail_at_once_with_a_remedy(tmp_path, photos, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    started = time.monotonic()
    result = jrsearch("index", str(photos), lib=tmp_path / "lib", ok=False)
    assert result.exit_code == 1
    assert "ViT-B-32/laion2b_s34b_b79k" in result.stderr and "--checkpoint PATH" in result.stderr
    assert "Traceback" not in result.output
    assert time.monotonic() - started < 60  # no retry loop against an unreachable hub


@pytest.mark.slow
def test_local_checkpoint_loads(tmp_path, photos, tiny_encoder):
    import torch

    checkpoint = tmp_path / "tiny.pt"
    torch.save(tiny_encoder.model.state_dict(), checkpoint)
    lib = tmp_path / "lib"
    jrsearch("index", str(photos), "--model", "tiny-test", "--checkpoint", str(checkpoint), lib=lib)
    status = json.loads(jrsearch("status", "--json", lib=lib).stdout)
    assert status["pretrained"] == str(checkpoint)
    hits = json.loads(jrsearch("query", "--image", str(photos / "img07.jpg"), "--json", lib=lib).stdout)
    assert hits[0]["path"] == str(photos / "img07.jpg")
    missing = jrsearch("index", str(photos), "--model", "tiny-test", "--checkpoint", str(tmp_path / "x.pt"),
                       lib=tmp_path / "lib2", ok=False)
    assert missing.exit_code == 1 and "x.pt does not exist" in missing.stderr


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(tmp_path):
    root = tmp_path / "many"
    for i in range(400):
        make_image(root / f"{i:03d}.png", seed=i, size=(24, 16))
    lib = tmp_path / "lib"
    command = [sys.executable, "-m", "jrsearch.cli.main", "index", str(root), "--model", "tiny-test",
               "--library", str(lib),
               "--batch-size", "1", "--workers", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(lib / "library.db") as db:
                committed = db.execute("select count(*) from vectors").fetchone()[0]
        except sqlite3.Error:
            committed = 0
        if committed >= 20:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"

    status = json.loads(jrsearch("status", "--json", lib=lib).stdout)
    kept = status["items"]["image"]["indexed"]
    assert kept >= 20 and status["indexes"]["image"]["up_to_date"] is False

    resumed = json.loads(jrsearch("index", str(root), "--json", lib=lib).stdout)
    assert resumed["indexed"] == 400 - kept and resumed["unchanged"] == kept
    status = json.loads(jrsearch("status", "--json", lib=lib).stdout)
    assert status["items"]["image"] == {"indexed": 400}
    image = status["indexes"]["image"]
    assert {key: image[key] for key in ("factory", "vectors", "up_to_date", "trained_on")} == {
        "factory": "IDMap,Flat", "vectors": 400, "up_to_date": True, "trained_on": 0}
    assert image["vector_bytes"] == 400 * status["dim"] * 2 and image["disk_bytes"] > 0  # float16 shards, index
    hits = json.loads(jrsearch("query", "--image", str(root / "123.png"), "--json", "-k", "1", lib=lib).stdout)
    assert hits[0]["path"] == str(root / "123.png")
