"""Issue 22 part B: checksums, self-repair and `jrsearch check` (shards cut short or flipped, damaged
index files, slot runs, filter columns, model-cache exports, library.db; temp files of killed saves)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import jrsearch, make_image

from jrsearch.retrieval.checksums import Verdict, check_file, check_folder, sidecar
from jrsearch.retrieval.code_table import codes_path
from jrsearch.retrieval.errors import FailureCode, LibraryError
from jrsearch.retrieval.integrity import check_library
from jrsearch.retrieval.library import FileRecord, Library
from jrsearch.retrieval.paths import DB_NAME, columns_path, index_path, slot_runs_path
from jrsearch.retrieval.types import ItemStatus, MediaKind, ModelSpec
from jrsearch.retrieval.vectors import SlotRuns

DIM = 32


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def written_library(root: Path, n: int = 40, batches: int = 4) -> tuple[Library, np.ndarray]:
    """A library of `n` one-vector images written in `batches` commits (one checksummed region each),
    indexes saved; and the vectors."""
    library = Library.open(root, create=True)
    library.adopt_model(ModelSpec("fixture-model", ""), DIM)
    vectors = unit(np.random.default_rng(0), n)
    step = n // batches
    with library.writing():
        for first in range(0, n, step):
            library.write([FileRecord(path=f"/photos/{i:03d}.jpg", kind=MediaKind.IMAGE, size=1, mtime_ns=0,
                                      content_hash=None, status=ItemStatus.INDEXED, vectors=vectors[i:i + 1])
                           for i in range(first, first + step)])
        library.save_indexes()
    return library, vectors


def shard_file(root: Path) -> Path:
    return root / "vectors" / MediaKind.IMAGE / "000000.f16"


def stored_vector(library: Library, path: Path) -> np.ndarray:
    (record,) = library.vectors_of(str(path))
    return library.shards.source(MediaKind.IMAGE).get(np.array([record.id]))[0]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x7F
    path.write_bytes(bytes(data))


# -- shards -------------------------------------------------------------------------------------


def test_a_shard_cut_short_is_never_zero_filled_and_its_files_are_marked_to_index_again(tmp_path):
    """Defect 2: before, the next write truncated to the committed length (zero-filling the lost rows),
    every item kept pointing at zeros, `index` exited 0 and `status` said nothing."""
    library, vectors = written_library(tmp_path / "lib")
    shard = shard_file(library.root)
    row_bytes = DIM * 2
    shard.write_bytes(shard.read_bytes()[:25 * row_bytes + 7])  # 25 whole rows and a torn one
    library.close()

    library = Library.open(tmp_path / "lib")
    assert any("15 of its 40 rows are missing" in d for d in library.status()["damaged"])
    with library.writing():  # the next writer: marks, then writes after what is on disk
        library.write([FileRecord(path="/photos/new.jpg", kind=MediaKind.IMAGE, size=1, mtime_ns=0,
                                  content_hash=None, status=ItemStatus.INDEXED, vectors=vectors[:1])])
        library.save_indexes()
    assert len(library.notes) == 1 and "15 file(s) marked to index again" in library.notes[0]
    lost = {f"/photos/{i:03d}.jpg" for i in range(25, 40)}
    failed = dict(library.failures())
    assert set(failed) == lost and all("index it again" in (why or "") for why in failed.values())
    marked = library.item_at("/photos/030.jpg")
    assert marked is not None and marked.failure == FailureCode.DAMAGED_VECTORS and marked.size == -1
    ids, stored = library.shards.stored(MediaKind.IMAGE)
    assert len(ids) == 26 and not (np.abs(stored).sum(axis=1) == 0).any()  # no zero-filled vector anywhere
    np.testing.assert_allclose(stored[:25], vectors[:25], atol=2e-3)
    assert shard.stat().st_size == 26 * row_bytes
    assert library.index(MediaKind.IMAGE).ntotal == 26
    assert not library.status()["damaged"]


def test_index_embeds_the_files_a_cut_shard_lost_again(tmp_path, tiny_encoder):
    """Defect 2, end to end: the next `index` of the folder restores them (same vectors as before)."""
    from jrsearch.indexer.pipeline import run_index

    photos = tmp_path / "photos"
    for i in range(6):
        make_image(photos / f"img{i}.jpg", seed=i, size=(32, 24))
    library = Library.open(tmp_path / "lib", create=True)
    with library.writing():
        run_index(library, tiny_encoder, [photos])
    before = {p.name: stored_vector(library, p) for p in photos.iterdir()}
    shard = shard_file(library.root)
    shard.write_bytes(shard.read_bytes()[:2 * tiny_encoder.dim * 2])
    with library.writing():
        report = run_index(library, tiny_encoder, [photos])
    assert report.indexed == 4 and not report.failed and not library.failures()
    for path in photos.iterdir():
        np.testing.assert_allclose(stored_vector(library, path), before[path.name], atol=2e-3)
    assert "marked to index again" in library.notes[0]


def test_a_flipped_bit_in_a_shard_is_found_by_check_and_repaired(tmp_path):
    """Defect 3 (shards): before, a flipped bit returned a wrong answer with exit 0; nothing noticed."""
    library, _ = written_library(tmp_path / "lib")
    library.close()
    flip(shard_file(tmp_path / "lib"), 23 * DIM * 2 + 5)  # row 23: the third region (rows 20-29)
    found = check_library(tmp_path / "lib")
    assert not found.sound
    assert [f.detail for f in found.findings] == ["1 written regions fail their checksum"]
    repaired = check_library(tmp_path / "lib", repair=True)
    assert repaired.sound and sorted(repaired.reindex) == [f"/photos/{i:03d}.jpg" for i in range(20, 30)]
    assert check_library(tmp_path / "lib").sound  # the damaged rows are no longer anyone's
    library = Library.open(tmp_path / "lib")
    assert library.index(MediaKind.IMAGE).ntotal == 30


def test_a_library_written_before_checksums_is_unknown_not_damaged(tmp_path):
    library, vectors = written_library(tmp_path / "lib")
    library.close()
    for leftover in [*(tmp_path / "lib").rglob("*.sum"), *(tmp_path / "lib").rglob("*.sums"),
                     *(tmp_path / "lib").rglob("checksums.json")]:
        leftover.unlink()
    report = check_library(tmp_path / "lib")
    assert report.sound
    assert [f.state for f in report.findings] == ["unknown"] and "40 vectors" in report.findings[0].detail
    assert check_file(index_path(tmp_path / "lib", MediaKind.IMAGE)).verdict is Verdict.UNKNOWN
    library = Library.open(tmp_path / "lib")
    with library.writing():  # the next write records its region
        library.write([FileRecord(path="/photos/new.jpg", kind=MediaKind.IMAGE, size=1, mtime_ns=0,
                                  content_hash=None, status=ItemStatus.INDEXED, vectors=vectors[:1])])
        library.save_indexes()
    assert check_file(index_path(tmp_path / "lib", MediaKind.IMAGE), full=True).verdict is Verdict.SOUND


# -- derived files ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped"])
def test_a_damaged_index_file_is_rebuilt_from_the_shards_with_a_note(tmp_path, damage):
    """Defects 3 and 4: before, a truncated or garbage image.faiss raised faiss's read error in `index`
    and serve, and a flipped byte in a vector came first in unrelated queries."""
    library, vectors = written_library(tmp_path / "lib")
    expected = library.index(MediaKind.IMAGE).search(vectors, 5)
    library.close()
    path = index_path(tmp_path / "lib", MediaKind.IMAGE)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"\0" * path.stat().st_size)
    else:
        data = bytearray(path.read_bytes())  # a float of some vector becomes ~3.4e38: before, it came first
        data[len(data) // 2:len(data) // 2 + 8] = b"\x7f" * 8
        path.write_bytes(bytes(data))
    library = Library.open(tmp_path / "lib")
    with library.writing():
        index = library.index(MediaKind.IMAGE)
        scores, ids = index.search(vectors, 5)
        library.save_indexes()
    np.testing.assert_array_equal(ids, expected[1])
    np.testing.assert_allclose(scores, expected[0], atol=1e-5)
    assert len(library.notes) == 1 and f"{path} is damaged" in library.notes[0]
    assert check_file(path, full=True).verdict is Verdict.SOUND  # written again by the save


def test_damaged_slot_runs_and_filter_columns_are_rebuilt_not_fatal(tmp_path):
    """Defect 4: before, a damaged slots.npz raised BadZipFile in `index`."""
    library, vectors = written_library(tmp_path / "lib")
    library.close()
    root = tmp_path / "lib"
    slot_runs_path(root, MediaKind.IMAGE).write_bytes(b"PK\x03\x04 not a zip at all")
    columns = columns_path(root, MediaKind.IMAGE)
    (columns / "ids.npy").write_bytes((columns / "ids.npy").read_bytes()[:-8])
    assert SlotRuns.load(slot_runs_path(root, MediaKind.IMAGE)) is None
    assert check_folder(columns).damaged
    report = check_library(root)
    assert {Path(f.path).name for f in report.findings} == {"image.slots.npz", "ids.npy"}
    library = Library.open(root)
    with library.writing():
        library.write([FileRecord(path="/photos/new.jpg", kind=MediaKind.IMAGE, size=1, mtime_ns=0,
                                  content_hash=None, status=ItemStatus.INDEXED, vectors=vectors[:1])])
        library.save_indexes()
    assert SlotRuns.load(slot_runs_path(root, MediaKind.IMAGE)) is not None
    assert check_folder(columns, full=True).verdict is Verdict.SOUND
    assert check_library(root).sound


def test_a_damaged_numpy_text_tower_is_not_loaded(tmp_path):
    """Defect 3: before, a damaged tower in the model cache made every text query say "No results"."""
    from jrsearch.retrieval.checksums import write_folder_checked

    folder = tmp_path / "query_model"
    write_folder_checked(folder, lambda tmp: np.save(tmp / "token_embedding.npy", np.ones((4, 4), np.float32)))
    assert check_folder(folder, full=True).verdict is Verdict.SOUND
    flip(folder / "token_embedding.npy", 140)
    assert check_folder(folder).verdict is Verdict.SOUND  # same size: only the full check sees it
    assert check_folder(folder, full=True).reason == "its bytes fail their checksum"
    (folder / "token_embedding.npy").write_bytes(b"short")
    assert check_folder(folder).damaged  # what TextTower.load checks on every cold query


@pytest.mark.slow
def test_a_truncated_onnx_export_is_exported_again(tmp_path, monkeypatch, tiny_onnx_encoder):
    """Defect 4: before, a truncated image.onnx in the model cache blocked `index` with no re-export."""
    from jrsearch.retrieval import model_cache
    from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder

    shared = model_cache.find(TINY_TEST_MODEL)
    assert shared is not None
    shutil.copytree(shared.parent, tmp_path / "models")
    monkeypatch.setenv("JRSEARCH_CACHE", str(tmp_path))
    image = model_cache.find(TINY_TEST_MODEL) / "onnx" / "image.onnx"
    size = image.stat().st_size
    image.write_bytes(image.read_bytes()[:1000])
    encoder = load_encoder(TINY_TEST_MODEL, backend="onnx")
    assert encoder.backend == "onnx" and image.stat().st_size == size
    assert any("image.onnx was damaged" in note and "exported the model again" in note for note in encoder.notes)
    assert np.isfinite(encoder.encode_texts(["a dog"])).all()


# -- library.db ----------------------------------------------------------------------------------


def test_a_damaged_library_db_is_one_line_and_check_finds_a_damaged_middle_page(tmp_path):
    """Defect 4: before, a truncated library.db gave a traceback; a damaged page was never noticed."""
    library, _ = written_library(tmp_path / "lib", n=400, batches=4)
    library.close()
    db = tmp_path / "lib" / DB_NAME
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        pages = [p for (p,) in con.execute("SELECT pageno FROM dbstat WHERE name = 'items' AND pagetype = 'leaf'")]
    middle = pages[len(pages) // 2] - 1
    data = bytearray(db.read_bytes())
    data[middle * page_size:(middle + 1) * page_size] = bytes(page_size)  # a zeroed page in the middle
    db.write_bytes(bytes(data))
    result = jrsearch("check", lib=tmp_path / "lib", ok=False)
    assert result.exit_code == 1 and f"damaged: {db}" in result.output and "restore it from a backup" in result.output
    db.write_bytes(bytes(data[:page_size * 2]))  # truncated
    with pytest.raises(LibraryError, match=r"library\.db is damaged .* run `jrsearch check`"):
        Library.open(tmp_path / "lib")
    status = jrsearch("status", lib=tmp_path / "lib", ok=False)
    assert status.exit_code == 1 and "Traceback" not in status.output and len(status.output.splitlines()) == 1


# -- temp files of killed saves --------------------------------------------------------------------


def test_the_next_writer_removes_temp_files_a_killed_save_left(tmp_path):
    """Defect 8: before, a temp file as large as the index stayed after every killed save."""
    library, vectors = written_library(tmp_path / "lib")
    index_dir = index_path(library.root, MediaKind.IMAGE).parent
    stale = [index_dir / "image.faiss.k3j_9x2q.tmp", index_dir / "image.columns.ab12cd34"]
    stale[0].write_bytes(b"\0" * 4096)
    stale[1].mkdir()
    (stale[1] / "ids.npy").write_bytes(b"x")
    past = time.time() - 5
    for path in stale:
        os.utime(path, (past, past))
    with library.writing():
        library.write([FileRecord(path="/photos/new.jpg", kind=MediaKind.IMAGE, size=1, mtime_ns=0,
                                  content_hash=None, status=ItemStatus.INDEXED, vectors=vectors[:1])])
    assert not any(path.exists() for path in stale)
    assert index_path(library.root, MediaKind.IMAGE).is_file() and sidecar(index_path(library.root, "image")).is_file()


# -- the command ----------------------------------------------------------------------------------


def test_check_command_exit_codes_json_and_repair(tmp_path):
    library, _ = written_library(tmp_path / "lib")
    library.close()
    sound = jrsearch("check", "--json", lib=tmp_path / "lib")
    assert json.loads(sound.output)["sound"] is True
    index_path(tmp_path / "lib", MediaKind.IMAGE).write_bytes(b"garbage")
    damaged = jrsearch("check", lib=tmp_path / "lib", ok=False)
    assert damaged.exit_code == 1 and "damaged:" in damaged.output and damaged.output.rstrip().endswith("damage found")
    repaired = jrsearch("check", "--repair", "--json", lib=tmp_path / "lib")
    body = json.loads(repaired.output)
    assert body["sound"] and [f["state"] for f in body["findings"]] == ["repaired"]
    assert jrsearch("check", str(tmp_path / "lib"), lib=tmp_path / "elsewhere").output.rstrip().endswith("sound")


def test_a_damaged_code_table_is_found_and_encoded_again(tmp_path, monkeypatch):
    """A PQ index's codes by id (`code_table.py`): damaged, a search never reads it; check finds it,
    --repair removes it and the save encodes it again from the shards, the index itself untouched."""
    monkeypatch.setattr("jrsearch.retrieval.index.EXACT_MAX", 100)
    monkeypatch.setenv("JRSEARCH_INDEX_MEMORY", "60000")  # IVF + PQ at 2,000 vectors
    library, _ = written_library(tmp_path / "lib", n=2000, batches=2)
    index = library.index(MediaKind.IMAGE)
    assert index is not None and index.codes is not None and len(index.codes) == 2000
    library.close()
    root = tmp_path / "lib"
    table = codes_path(index_path(root, MediaKind.IMAGE))
    index_bytes = index_path(root, MediaKind.IMAGE).read_bytes()
    (table / "codes.npy").write_bytes((table / "codes.npy").read_bytes()[:-64])
    library = Library.open(root)
    assert library.index(MediaKind.IMAGE).codes is None  # the plan goes without it
    library.close()
    report = check_library(root)
    assert [Path(f.path).name for f in report.findings] == ["codes.npy"]
    report = check_library(root, repair=True)
    assert [f.state for f in report.findings] == ["repaired"]
    assert check_folder(table, full=True).verdict is Verdict.SOUND
    assert index_path(root, MediaKind.IMAGE).read_bytes() == index_bytes
    library = Library.open(root)
    assert len(library.index(MediaKind.IMAGE).codes) == 2000
    library.close()
