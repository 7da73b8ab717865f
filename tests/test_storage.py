"""Vector shards, schema migrations, crashes, full disks, racing writers and hostile file names."""

from __future__ import annotations

import ast
import errno
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from jrsearch.retrieval import migrations
from jrsearch.retrieval import shards as shards_module
from jrsearch.retrieval import store as store_module
from jrsearch.retrieval.catalog_writer import CatalogWriter
from jrsearch.retrieval.errors import FailureCode, LibraryError
from jrsearch.retrieval.library import FileRecord, Library, VideoRecord
from jrsearch.retrieval.paths import slot_runs_path
from jrsearch.retrieval.types import ItemStatus, MediaKind, ModelSpec
from jrsearch.retrieval.vectors import ShardSource, SlotRuns

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parents[1]
DIM = 32


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def images(paths: list[str], vectors: np.ndarray) -> list[FileRecord]:
    return [FileRecord(path=p, kind=MediaKind.IMAGE, size=1, mtime_ns=0, content_hash=None,
                       status=ItemStatus.INDEXED, vectors=vectors[i:i + 1]) for i, p in enumerate(paths)]


def new_library(root: Path, dim: int = DIM) -> Library:
    library = Library.open(root, create=True)
    library.adopt_model(ModelSpec("fixture-model", ""), dim)
    return library


def faiss_ids(index) -> set[int]:
    import faiss

    return set(faiss.vector_to_array(faiss.downcast_index(index.index).id_map).tolist())


# -- shards ----------------------------------------------------------------------------------


def test_vectors_live_in_float16_shards_not_in_sqlite(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "SHARD_ROWS", 64)
    rng = np.random.default_rng(0)
    vectors = unit(rng, 150)
    library = new_library(tmp_path / "lib")
    library.write(images([f"/p/{i:03d}.jpg" for i in range(100)], vectors[:100]))
    library.write(images([f"/p/{i:03d}.jpg" for i in range(100, 150)], vectors[100:]))
    shard_files = sorted(p.name for p in (tmp_path / "lib" / "vectors" / "image").iterdir())
    assert shard_files == ["000000.f16", "000000.sums", "000001.f16", "000001.sums", "000002.f16", "000002.sums"]
    assert (tmp_path / "lib" / "vectors" / "image" / "000002.f16").stat().st_size == (150 - 128) * DIM * 2
    with sqlite3.connect(tmp_path / "lib" / "library.db") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(vectors)")}
        assert "embedding" not in columns and {"shard", "row"} <= columns
        assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.SCHEMA_VERSION

    ids, stored = library.shards.stored("image")
    assert len(ids) == 150 and np.all(np.diff(ids) > 0)
    np.testing.assert_allclose(stored, vectors, atol=1e-3)  # float16 rounding, renormalized
    source = library.shards.source("image")
    assert len(source) == 150
    assert source.sample(40, seed=1).shape == (40, DIM)
    got = source.get(np.array([ids[3], 10**9, ids[140]]))
    np.testing.assert_allclose(got[[0, 2]], vectors[[3, 140]], atol=1e-3)
    assert np.isnan(got[1]).all()  # not a live id


def test_deleted_vectors_are_tombstoned_then_compacted(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "SHARD_ROWS", 50)
    rng = np.random.default_rng(1)
    vectors = unit(rng, 120)
    paths = [f"/p/{i:03d}.jpg" for i in range(120)]
    library = new_library(tmp_path / "lib")
    library.write(images(paths, vectors))
    library.save_indexes()
    folder = tmp_path / "lib" / "vectors" / "image"

    library.remove(paths[:20])  # shard 0 is 40% dead: tombstones only
    assert (folder / "000000.f16").exists()
    assert len(library.shards.source("image")) == 100
    library.remove(paths[20:30])  # 60% dead: its live rows move to the tail, the file goes
    assert not (folder / "000000.f16").exists()
    library.save_indexes()

    ids, stored = library.shards.stored("image")
    assert len(ids) == 90
    np.testing.assert_allclose(stored, vectors[30:], atol=1e-3)
    assert faiss_ids(library.index("image")) == set(ids.tolist())
    library.close()
    reopened = Library.open(tmp_path / "lib")
    with reopened.writing():
        pass  # recovery finds nothing to undo
    np.testing.assert_allclose(reopened.shards.stored("image")[1], vectors[30:], atol=1e-3)
    hits = reopened.index("image").search(vectors[77:78], 1)
    assert reopened.hits([int(hits[1][0, 0])])[0].path == paths[77]


def test_saved_slot_runs_find_the_same_rows_as_sqlite_and_step_aside_when_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "SHARD_ROWS", 50)
    rng = np.random.default_rng(3)
    vectors = unit(rng, 160)
    paths = [f"/p/{i:03d}.jpg" for i in range(160)]
    library = new_library(tmp_path / "lib")
    for first in range(0, 120, 40):  # three batches across three shards
        library.write(images(paths[first:first + 40], vectors[first:first + 40]))
    library.remove(paths[5:8] + paths[60:90])  # gaps in the ids; shard 1 mostly dead: compacted
    library.save_indexes()
    runs = SlotRuns.load(slot_runs_path(library.root, "image"))
    assert runs is not None and 3 <= len(runs.first_id) <= 8  # a few runs, not one per vector

    def both(ids):
        sqlite_only = ShardSource(library.store.read, library.shards.shard_set("image"), "image")  # no runs file
        return library.shards.source("image").get(ids), sqlite_only.get(ids)

    ids = library.shards.stored("image")[0]
    asked = np.concatenate([ids[::-1], [6, 7, 8, 61, 10**9, -1]])  # live, deleted, unknown, in any order
    with_runs, sqlite_only = both(asked)
    np.testing.assert_array_equal(with_runs, sqlite_only)
    assert np.isnan(with_runs[len(ids):]).all() and not np.isnan(with_runs[:len(ids)]).any()
    covered, _, _ = runs.locate(ids)
    assert covered.all()  # every live vector is found without SQLite

    library.write(images(paths[120:], vectors[120:]))  # a newer generation: the runs no longer speak for it
    library.remove(paths[:5])
    ids = library.shards.stored("image")[0]
    with_runs, sqlite_only = both(np.concatenate([ids, [1, 2]]))
    np.testing.assert_array_equal(with_runs, sqlite_only)
    np.testing.assert_allclose(with_runs[-40 - 2:-2], vectors[120:], atol=1e-3)
    assert np.isnan(with_runs[-2:]).all()  # removed after the runs were saved: not live, whatever the runs say


def test_stored_rows_are_gathered_into_the_callers_buffer(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "SHARD_ROWS", 50)
    vectors = unit(np.random.default_rng(4), 120)
    library = new_library(tmp_path / "lib")
    library.write(images([f"/p/{i:03d}.jpg" for i in range(120)], vectors))  # ids 1..120 over three shards
    library.remove(["/p/010.jpg"])
    library.save_indexes()
    source = library.shards.source("image")
    for asked in (np.array([30, 2, 17, 5]), np.array([3, 70, 110, 49]), np.array([3, 11, 70])):  # one shard,
        buffer = np.full((len(asked), DIM), 7, np.float16)                   # three, one id deleted (11)
        rows = source.get_stored(asked, out=buffer)
        assert rows is buffer
        live = asked != 11
        np.testing.assert_array_equal(rows[live], vectors[asked[live] - 1].astype(np.float16))
        assert np.isnan(rows[~live]).all()
    library.close()


def test_remove_returns_how_many_items_were_removed(tmp_path):
    library = new_library(tmp_path / "lib")
    paths = [f"/p/{i}.jpg" for i in range(3)]
    library.write(images(paths, unit(np.random.default_rng(2), 3)))
    assert library.remove([paths[0], paths[1], "/p/never-indexed.jpg"]) == 2
    assert library.remove([paths[0]]) == 0  # already gone
    assert [item.path for item in library.items()] == [paths[2]]
    library.close()


def test_the_last_shard_is_compacted_into_a_new_one(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "COMPACT_MIN_DEAD", 10)
    rng = np.random.default_rng(7)
    vectors = unit(rng, 30)
    paths = [f"/p/{i:03d}.jpg" for i in range(30)]
    library = new_library(tmp_path / "lib")
    library.write(images(paths, vectors))
    library.remove(paths[:9])  # 9 dead: under COMPACT_MIN_DEAD, kept
    assert sorted(p.name for p in (tmp_path / "lib" / "vectors" / "image").iterdir()) == ["000000.f16", "000000.sums"]
    library.remove(paths[9:16])  # 16 dead of 30: the only shard moves into shard 1 (its checksums too)
    assert sorted(p.name for p in (tmp_path / "lib" / "vectors" / "image").iterdir()) == ["000001.f16", "000001.sums"]
    np.testing.assert_allclose(library.shards.stored("image")[1], vectors[16:], atol=1e-3)
    library.write(images(["/p/new.jpg"], vectors[:1]))  # appends after the moved rows
    np.testing.assert_allclose(library.shards.stored("image")[1][-1], vectors[0], atol=1e-3)
    assert (tmp_path / "lib" / "vectors" / "image" / "000001.f16").stat().st_size == 15 * DIM * 2


def test_uncommitted_shard_tail_is_ignored_and_truncated(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    vectors = unit(rng, 30)
    library = new_library(tmp_path / "lib")
    library.write(images([f"/p/{i}.jpg" for i in range(20)], vectors[:20]))

    def die_before_commit(writer, kind, shards):
        raise KeyboardInterrupt  # as if killed after the shard bytes were fsynced, before the commit

    monkeypatch.setattr(CatalogWriter, "count_shard_rows", die_before_commit)
    with pytest.raises(KeyboardInterrupt):
        library.write(images([f"/p/{i}.jpg" for i in range(20, 30)], vectors[20:]))
    monkeypatch.undo()
    shard = tmp_path / "lib" / "vectors" / "image" / "000000.f16"
    assert shard.stat().st_size == 30 * DIM * 2  # the orphan bytes are there
    library.close()

    reopened = Library.open(tmp_path / "lib")
    assert len(reopened.shards.stored("image")[0]) == 20
    with reopened.writing():
        assert shard.stat().st_size == 20 * DIM * 2
        reopened.write(images(["/p/late.jpg"], vectors[29:30]))
    _, stored = reopened.shards.stored("image")
    np.testing.assert_allclose(stored, np.concatenate([vectors[:20], vectors[29:30]]), atol=1e-3)


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from pathlib import Path
    from jrsearch.retrieval.library import FileRecord, Library
    from jrsearch.retrieval.types import ItemStatus, MediaKind, ModelSpec

    root, start = Path(sys.argv[1]), int(sys.argv[2])
    library = Library.open(root, create=True)
    library.adopt_model(ModelSpec("fixture-model", ""), 32)
    with library.writing():
        for batch in range(start, start + 10_000):
            rng = np.random.default_rng(batch)
            vectors = rng.standard_normal((50, 32)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            library.write([FileRecord(path=f"/b/{batch:05d}/{i:02d}.jpg", kind=MediaKind.IMAGE, size=1, mtime_ns=0,
                                      content_hash=None, status=ItemStatus.INDEXED, vectors=vectors[i:i + 1])
                           for i in range(50)])
            print(batch, flush=True)
""")


@pytest.mark.slow
def test_kill_9_while_writing_loses_no_committed_vector(tmp_path):
    """Three kill -9s at random moments of a bulk writer: every batch it reported committed is
    there with its exact vectors, and the writer carries on from the last commit."""
    lib = tmp_path / "lib"
    rng = np.random.default_rng(3)
    acknowledged: list[int] = []
    start = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(lib), str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=REPO, text=True)
        wanted = len(acknowledged) + int(rng.integers(3, 12))
        while len(acknowledged) < wanted:
            line = proc.stdout.readline()
            assert line, "the writer stopped on its own"
            acknowledged.append(int(line))
        time.sleep(float(rng.uniform(0, 0.05)))  # land anywhere inside the next batch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(lib / "library.db") as db:
            start = db.execute("SELECT count(*) FROM items").fetchone()[0] // 50
        assert start >= len(acknowledged)

    library = Library.open(lib)
    with library.writing():  # truncates whatever the last kill left past the commit
        pass
    ids, stored = library.shards.stored("image")
    assert len(ids) == start * 50
    for batch in acknowledged:
        vectors = np.random.default_rng(batch).standard_normal((50, 32)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        np.testing.assert_allclose(stored[batch * 50:(batch + 1) * 50], vectors, atol=1e-3)
        assert library.item_at(f"/b/{batch:05d}/49.jpg") is not None
    shards = library.root / "vectors" / "image" / "000000.f16"
    assert shards.stat().st_size == start * 50 * 32 * 2
    library.save_indexes()
    assert faiss_ids(library.index("image")) == set(ids.tolist())


# -- schema versions -------------------------------------------------------------------------


def v1_library(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """The committed version-1 fixture, unpacked, and the float32 vectors it holds by id."""
    with tarfile.open(FIXTURES / "v1_library.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lib"
    with sqlite3.connect(root / "library.db") as db:
        blobs = db.execute("SELECT id, embedding FROM vectors ORDER BY id").fetchall()
    return root, {vid: np.frombuffer(blob, dtype=np.float32) for vid, blob in blobs}


def test_version_1_library_migrates_with_every_vector_intact(tmp_path):
    root, originals = v1_library(tmp_path)
    library = Library.open(root)
    assert library.model() == (ModelSpec("fixture-model", ""), DIM)
    assert library.model().spec == ModelSpec("fixture-model", "") and library.model().dim == DIM
    seen = 0
    for kind in ("image", "text", "video"):
        ids, stored = library.shards.stored(kind)
        for vid, vector in zip(ids.tolist(), stored, strict=True):
            expected = originals[vid]
            rounded = expected.astype(np.float16).astype(np.float32)
            np.testing.assert_allclose(vector, rounded / np.linalg.norm(rounded), rtol=0, atol=1e-6)
            seen += 1
    assert seen == len(originals) == 165
    assert library.item_at("/photos/café.jpg") is not None
    assert library.failures() == [("/photos/broken.jpg", "cannot decode")]
    assert [(v.modality, v.start_s) for v in library.vectors_of("/videos/clip.mp4")][2:4] == [("image", 2.0),
                                                                                             ("audio", 3.0)]
    with sqlite3.connect(root / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.SCHEMA_VERSION
        assert "embedding" not in {row[1] for row in db.execute("PRAGMA table_info(vectors)")}
    # the stale image index (two files deleted after it was saved) is rebuilt from the shards
    index = library.index("image")
    assert faiss_ids(index) == set(library.shards.stored("image")[0].tolist())
    hits = index.search(originals[100][None], 1)
    assert library.hits([int(hits[1][0, 0])])[0].path == "/photos/099.jpg"


def test_interrupted_migration_resumes_and_old_readers_keep_working(tmp_path, monkeypatch):
    root, originals = v1_library(tmp_path)
    monkeypatch.setattr(migrations, "MIGRATION_BATCH", 50)
    calls = {"n": 0}
    real_append = shards_module.ShardSet.append

    def dies_on_third_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_append(self, *args, **kwargs)

    monkeypatch.setattr(shards_module.ShardSet, "append", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        Library.open(root)
    with sqlite3.connect(root / "library.db") as db:  # still a complete version-1 library
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        moved = db.execute(f"SELECT count(*) FROM {migrations.SLOTS}").fetchone()[0]
        blobs = db.execute("SELECT count(*) FROM vectors WHERE length(embedding) = ?", (DIM * 4,)).fetchone()[0]
        assert 0 < moved < len(originals) and blobs == len(originals)

    monkeypatch.setattr(shards_module.ShardSet, "append", real_append)
    library = Library.open(root)
    ids = np.concatenate([library.shards.stored(kind)[0] for kind in ("image", "text", "video")])
    vectors = np.concatenate([library.shards.stored(kind)[1] for kind in ("image", "text", "video")])
    assert sorted(ids.tolist()) == sorted(originals)
    for vid, vector in zip(ids.tolist(), vectors, strict=True):
        np.testing.assert_allclose(vector, originals[vid], atol=1e-3)


def test_version_2_library_moves_item_fields_into_data_and_the_failure_code_into_a_column(tmp_path):
    """The version-2 fixture (width/height/duration_s columns, the NEEDS_AUDIO_TOWER code marked
    at the end of the error text) opens as version 3 with every field and code where it belongs."""
    with tarfile.open(FIXTURES / "v2_library.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lib"
    library = Library.open(root)
    with sqlite3.connect(root / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.SCHEMA_VERSION
        columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
        assert {"details", "failure"} <= columns
        if sqlite3.sqlite_version_info >= (3, 35):
            assert not {"width", "height", "duration_s"} & columns
        failures = dict(db.execute("SELECT path, failure FROM items WHERE status = 'failed'").fetchall())
    assert failures == {b"/videos/silent.mp4": FailureCode.NEEDS_AUDIO_TOWER.value, b"/videos/broken.mp4": None}
    image, video = library.item_at("/photos/a.jpg"), library.item_at("/videos/clip.mp4")
    sound, text = library.item_at("/sounds/bird.wav"), library.item_at("/texts/captions.txt")
    assert (image.width, image.height, image.duration_s) == (640, 480, None)
    assert dict(video.details) == {"width": 320, "height": 240, "duration_s": 4.5}
    assert (sound.width, sound.duration_s, dict(text.details)) == (None, 2.25, {})
    silent = library.item_at("/videos/silent.mp4")
    assert silent.failure is FailureCode.NEEDS_AUDIO_TOWER and silent.error.endswith(FailureCode.NEEDS_AUDIO_TOWER.note)
    assert library.item_at("/videos/broken.mp4").failure is None
    with library.store.read() as catalog:  # found by the column: a video indexed without sound, one waiting
        assert {path for path, _, _ in catalog.to_revisit("video", FailureCode.NEEDS_AUDIO_TOWER.value, "audio")} \
            == {"/videos/silent.mp4"}
    assert [(v.modality, v.start_s) for v in library.vectors_of("/videos/clip.mp4")] == [
        ("image", 0.0), ("image", 1.0), ("audio", 0.0)]
    assert library.status()["indexes"]["video"]["up_to_date"]  # nothing about the vectors changed
    hits = library.index("text").search(library.shards.stored("text")[1][1:2], 1)
    assert library.hits([int(hits[1][0, 0])])[0].text == "a cat"

    library.write([VideoRecord(path="/videos/new.mp4", size=1, mtime_ns=0, content_hash=None,
                               status=ItemStatus.FAILED, error="no video stream", failure=FailureCode.NEEDS_AUDIO_TOWER,
                               width=None, height=None, duration_s=3.0)])
    new = library.item_at("/videos/new.mp4")
    assert new.failure is FailureCode.NEEDS_AUDIO_TOWER and dict(new.details) == {"duration_s": 3.0}


def test_a_kind_with_fields_of_its_own_needs_no_schema_change(tmp_path):
    @dataclass(kw_only=True)
    class PageRecord(FileRecord):
        kind: str = "page"
        pages: int = 0
        title: str | None = None

        def item_fields(self) -> dict[str, object]:
            return {"pages": self.pages, "title": self.title}

    library = new_library(tmp_path / "lib")
    library.write([PageRecord(path="/docs/a.pdf", size=1, mtime_ns=0, content_hash=None, status=ItemStatus.INDEXED,
                              vectors=unit(np.random.default_rng(0), 1), pages=12, title="Ré")])
    item = library.item_at("/docs/a.pdf")
    assert item.kind == "page" and dict(item.details) == {"pages": 12, "title": "Ré"} and item.width is None


def test_library_from_a_newer_jrsearch_is_refused(tmp_path):
    new_library(tmp_path / "lib").close()
    with sqlite3.connect(tmp_path / "lib" / "library.db") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(LibraryError, match=r"newer jrsearch \(schema version 99.*upgrade jrsearch"):
        Library.open(tmp_path / "lib")


# -- one lock before any schema work ---------------------------------------------------------

RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from jrsearch.retrieval.errors import JrsearchError
    from jrsearch.retrieval.library import Library

    root = Path(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # the barrier: the test releases both racers together once both are ready
    try:
        library = Library.open(root, create=True)
        with library.writing():
            time.sleep(0.2)
        print("ok")
    except JrsearchError as exc:
        print("refused:", exc)
""")


@pytest.mark.slow
def test_two_writers_racing_on_a_new_library_never_crash(tmp_path):
    for attempt in range(4):
        root = tmp_path / f"lib{attempt}"
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(root)], cwd=REPO, text=True, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        for proc in procs:  # both imported and waiting: no head start, however slow the machine
            assert proc.stdout and proc.stderr and proc.stdout.readline() == "ready\n", proc.stderr.read()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60) for proc in procs]
        for (out, err), proc in zip(outputs, procs, strict=True):
            assert proc.returncode == 0 and "Traceback" not in err, err
            assert out.startswith("ok") or "another `jrsearch index` is writing" in out, out
        assert any(out.startswith("ok") for out, _ in outputs)
        with sqlite3.connect(root / "library.db") as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.SCHEMA_VERSION


# -- full disks ------------------------------------------------------------------------------


def test_full_disk_during_a_write_is_one_clear_error_and_keeps_every_commit(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    vectors = unit(rng, 30)
    library = new_library(tmp_path / "lib")
    library.write(images([f"/p/{i}.jpg" for i in range(20)], vectors[:20]))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(LibraryError) as caught:
        library.write(images([f"/p/{i}.jpg" for i in range(20, 30)], vectors[20:]))
    message = str(caught.value)
    assert "\n" not in message and f"no space left on the disk holding library {tmp_path / 'lib'}" in message
    assert "storing a batch of 10 files needs about" in message and "everything committed before is kept" in message
    monkeypatch.undo()
    library.close()
    reopened = Library.open(tmp_path / "lib")
    _, stored = reopened.shards.stored("image")
    np.testing.assert_allclose(stored, vectors[:20], atol=1e-3)
    assert reopened.status()["items"]["image"] == {"indexed": 20}


def test_a_library_whose_disk_cannot_be_written_opens_read_only(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    vectors = unit(rng, 10)
    library = new_library(tmp_path / "lib")
    library.write(images([f"/p/{i}.jpg" for i in range(10)], vectors))
    library.save_indexes()
    library.close()

    real_connect = store_module.connect

    def full_disk(db, readonly=False, **kwargs):
        if not readonly:
            raise sqlite3.OperationalError("disk I/O error")  # what PRAGMA journal_mode=WAL gave on a full disk
        return real_connect(db, readonly=True, **kwargs)

    monkeypatch.setattr(store_module, "connect", full_disk)
    reader = Library.open(tmp_path / "lib")
    assert reader.readonly and reader.status()["items"]["image"] == {"indexed": 10}
    hits = reader.index("image").search(vectors[4:5], 1)
    assert reader.hits([int(hits[1][0, 0])])[0].path == "/p/4.jpg"
    with pytest.raises(LibraryError, match="read-only"):
        reader.write(images(["/p/new.jpg"], vectors[:1]))
    with pytest.raises(LibraryError, match="read-only"), reader.writing():
        pass


def tmpfs(path: Path, size: str):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-ENOSPC tests cover the logic")
    return path


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounting a small tmpfs needs root on Linux")
def test_a_really_full_disk(tmp_path):
    """On a 4 MB tmpfs: writes until the disk is full end in one clear error; the library then
    still answers status and queries, with every earlier commit."""
    disk = tmpfs(tmp_path / "disk", "4m")
    try:
        rng = np.random.default_rng(6)
        library = new_library(disk / "lib", dim=256)
        written = 0
        with pytest.raises(LibraryError, match="no space left on the disk"):
            for batch in range(1000):
                library.write(images([f"/p/{batch}/{i}.jpg" for i in range(200)], unit(rng, 200, 256)))
                written += 200
        assert written > 0
        library.close()
        filler = disk / "filler"  # whatever room is left: 100% full
        with open(filler, "wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
            except OSError:
                pass
        reader = Library.open(disk / "lib")
        assert reader.status()["items"]["image"] == {"indexed": written}
        ids, _ = reader.shards.stored("image")
        assert len(ids) == written
        reader.close()
        status = subprocess.run([sys.executable, "-m", "jrsearch.cli.main", "status", "--json",
                                 "--library", str(disk / "lib")],
                                cwd=REPO, capture_output=True, text=True)
        assert status.returncode == 0, status.stderr
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# -- file names that are not UTF-8 -----------------------------------------------------------


def test_file_names_that_are_not_utf8_round_trip(tmp_path, tiny_encoder):
    from helpers import make_image

    from jrsearch.indexer.pipeline import IndexOptions, run_index
    from jrsearch.retrieval.engine import SearchEngine

    root = tmp_path / "archive"
    make_image(root / "good.png", seed=1)
    bad = os.fsdecode(bytes(root) + b"/bad_\xff.png")
    make_image(Path(bad), seed=2)
    assert os.path.exists(os.fsencode(bad))
    lib = tmp_path / "lib"

    report = run_index(Library.open(lib, create=True), tiny_encoder, [root], IndexOptions(batch_size=4))
    assert report.indexed == 2 and not report.failed
    library = Library.open(lib)
    assert set(library.known_files()) == {str(root / "good.png"), bad}
    engine = SearchEngine(library, encoder=tiny_encoder)
    best = engine.search(engine.embed("image", Path(bad)), MediaKind.IMAGE, top_k=1)[0]
    assert best.path == bad and os.fsencode(best.path) == bytes(root) + b"/bad_\xff.png"
    assert best.to_json()["path"].endswith("bad_\\xff.png")  # readable, JSON-safe

    from fastapi.testclient import TestClient

    from jrsearch.cli.web.app import create_app
    from jrsearch.retrieval.service import LibraryService

    client = TestClient(create_app(LibraryService(library, engine)), raise_server_exceptions=False)
    item = client.get(f"/api/items/{best.item_id}")
    assert item.status_code == 200 and item.json()["name"] == "bad_\\xff.png"
    media = client.get(f"/api/items/{best.item_id}/media")
    assert media.status_code == 200 and media.content == Path(bad).read_bytes()
    assert client.get(f"/api/items/{best.item_id}/thumbnail").status_code == 200
    found = client.get("/api/search", params={"q": "anything", "top_k": 2}).json()["results"]
    assert {r["name"] for r in found} == {"good.png", "bad_\\xff.png"}

    again = run_index(Library.open(lib), tiny_encoder, [root], IndexOptions(batch_size=4))
    assert again.indexed == 0 and again.unchanged == 2
    os.unlink(os.fsencode(bad))
    gone = run_index(Library.open(lib), tiny_encoder, [root], IndexOptions(batch_size=4))
    assert gone.removed == 1
    assert set(Library.open(lib).known_files()) == {str(root / "good.png")}


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounting a small tmpfs needs root on Linux")
def test_index_on_a_full_disk_is_one_line_then_resumes(tmp_path):
    """`jrsearch index` into a library whose disk fills up: exit 1 with one line naming the
    library, no traceback; with room made, the same command finishes the job."""
    from helpers import make_image

    photos = tmp_path / "photos"
    for i in range(40):
        make_image(photos / f"{i:02d}.png", seed=i, size=(24, 16))
    disk = tmpfs(tmp_path / "disk", "24m")  # room for the tiny model's ~14 MiB text-tower export once freed
    try:
        lib = disk / "lib"
        command = [sys.executable, "-m", "jrsearch.cli.main", "index", str(photos), "--model", "tiny-test", "--library",
                   str(lib), "--batch-size", "4", "--json"]
        filler = disk / "filler"
        with open(filler, "wb") as handle:  # leave about 120 KB
            handle.write(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 120_000))
        full = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        assert full.returncode == 1, full.stdout + full.stderr
        assert "Traceback" not in full.stderr and full.stderr.strip().count("\n") == 0, full.stderr
        assert f"no space left on the disk holding library {lib}" in full.stderr
        filler.unlink()
        again = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        status = subprocess.run([sys.executable, "-m", "jrsearch.cli.main", "status", "--json", "--library", str(lib)],
                                cwd=REPO, capture_output=True, text=True)
        assert '"indexed": 40' in status.stdout
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# -- where SQL lives -------------------------------------------------------------------------

SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|BEGIN|COMMIT|ROLLBACK|VACUUM)\b")
CATALOG_MODULES = {"retrieval/catalog.py", "retrieval/catalog_writer.py", "retrieval/catalog_steps.py"}


def test_every_sql_statement_lives_in_the_catalog():
    """No module outside the catalog holds a statement (string constants and f-string parts that
    start like one), and none queries through the ORM (`select(`, `session`)."""
    found = []
    for folder in ("retrieval", "indexer", "cli", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if name in CATALOG_MODULES:
                continue
            source = path.read_text()
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value):
                    found.append(f"{name}:{node.lineno}: {node.value[:40]!r}")
            if re.search(r"from sqlalchemy import[^\n]*\bselect\b|\bsessionmaker\b", source):
                found.append(f"{name}: queries through the ORM")
    assert not found, found
