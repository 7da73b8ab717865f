"""The index knobs as a user meets them: a lossy index re-ranked on the shards, `--rerank`, `status`."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import jrsearch


def test_lossy_index_is_reranked_and_status_shows_its_footprint(tmp_path: Path, photos: Path, monkeypatch):
    monkeypatch.setattr("jrsearch.retrieval.index.EXACT_MAX", 4)
    monkeypatch.setenv("JRSEARCH_INDEX_MEMORY", "2000")  # 12 tiny vectors: SQ8 fits, float32 does not
    lib = tmp_path / "lib"
    jrsearch("index", str(photos), "--model", "tiny-test", lib=lib)
    status = json.loads(jrsearch("status", "--json", lib=lib).stdout)
    image = status["indexes"]["image"]
    assert image["factory"].endswith(",SQ8") and image["memory_mapped"]
    assert 12 * status["dim"] <= image["memory_bytes"] <= image["disk_bytes"] + 4096
    assert "once warm" in jrsearch("status", lib=lib).stdout

    target = sorted(photos.rglob("*.jpg"))[3]
    hits = {}
    for rerank in ("0", "100"):
        out = jrsearch("query", "--image", str(target), "--rerank", rerank, "--json", "-k", "3", lib=lib).stdout
        hits[rerank] = json.loads(out)
    exact = hits["100"][0]
    assert exact["path"] == str(target) and abs(exact["score"] - 1.0) < 2e-3  # float16 vector against itself
    assert hits["0"][0]["path"] == str(target)
    assert [h["score"] for h in hits["100"]] == sorted((h["score"] for h in hits["100"]), reverse=True)
    for rerank in ("0", "5"):  # the torch-free text path takes the knob too
        assert len(json.loads(jrsearch("query", "a red square", "--rerank", rerank, "--json", lib=lib).stdout)) == 10
