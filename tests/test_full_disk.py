"""A full disk: `index` ends with one line that names the library and the space it needs, nothing
committed is lost, a failed text-tower export is reported (and retried), thumbnails still come."""

from __future__ import annotations

import errno
import io
import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
from helpers import build_library, item_id, make_client, make_image
from PIL import Image
from typer.testing import CliRunner

from jrsearch.cli.main import app

runner = CliRunner()
SQLITE_FULL = "database or disk is full"
FAISS_FULL = ("Error in void faiss::write_index(const Index*, IOWriter*, int) at index_write.cpp:499: Error: "
              "'ret == (size * 4)' failed: write error in image.faiss.tmp: 4014 != 32768 (No space left on device)")


def index(*args: str, lib: Path):
    return runner.invoke(app, ["index", *args, "--model", "tiny-test", "--library", str(lib)])


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # the progress bar's, then the error
    errors = [line for line in lines if line.startswith("error: ")]
    assert result.exit_code == 1 and len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    return errors[0]


def stored_items(lib: Path) -> int:
    with sqlite3.connect(lib / "library.db") as db:
        return db.execute("SELECT count(*) FROM items").fetchone()[0]


def test_the_ways_a_full_disk_is_spelled_are_recognised():
    import sqlalchemy.exc

    from jrsearch.retrieval.diskspace import human_bytes, is_disk_full

    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO items ...", {}, sqlite3.OperationalError(SQLITE_FULL))
    assert is_disk_full(wrapped) and is_disk_full(RuntimeError(FAISS_FULL))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device")) and is_disk_full(OSError(errno.EDQUOT, "x"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise ValueError("while writing") from exc
    except ValueError as chained:
        assert is_disk_full(chained)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied")) and not is_disk_full(ValueError("disk"))
    assert [human_bytes(n) for n in (0, 1023, 1536, 20 * 2**20, 3 * 2**30)] == ["0 B", "1023 B", "1.5 KiB", "20 MiB",
                                                                               "3.0 GiB"]


def test_index_on_a_full_disk_is_one_line_naming_the_library_and_the_space(tmp_path, photos, monkeypatch):
    import faiss
    import sqlalchemy.exc

    from jrsearch.retrieval.library import Library

    lib = tmp_path / "lib"
    assert index(str(photos), "--batch-size", "4", lib=lib).exit_code == 0
    for i in range(12, 30):
        make_image(photos / f"new{i}.jpg", seed=i)
    real_write = Library.write
    calls = []

    def fills_up(self, records):  # the first batch fits, then SQLite reports the disk full (and rolls back)
        calls.append(len(records))
        if len(calls) > 1:
            raise sqlalchemy.exc.OperationalError("INSERT INTO vectors ...", {}, sqlite3.OperationalError(SQLITE_FULL))
        return real_write(self, records)

    def write_index(*args):  # and the index files cannot be written either
        raise RuntimeError(FAISS_FULL)

    monkeypatch.setattr(Library, "write", fills_up)
    monkeypatch.setattr(faiss, "write_index", write_index)
    line = one_error_line(index(str(photos), "--batch-size", "4", lib=lib))
    assert f"no space left on the disk holding library {lib}" in line
    assert "storing a batch of 4 files needs about" in line and "free at least" in line and " MiB" in line
    assert stored_items(lib) == 12 + 4  # the committed batch is kept

    monkeypatch.undo()
    assert index(str(photos), lib=lib).exit_code == 0  # room again: the run resumes
    assert stored_items(lib) == 30


def test_index_writes_that_fail_for_want_of_space_say_the_index_size(tmp_path, photos, monkeypatch):
    import faiss

    lib = tmp_path / "lib"
    monkeypatch.setattr(faiss, "write_index", lambda *args: (_ for _ in ()).throw(RuntimeError(FAISS_FULL)))
    line = one_error_line(index(str(photos), lib=lib))
    assert f"library {lib}" in line and "writing the search indexes needs about" in line
    assert stored_items(lib) == 12


def test_a_library_that_cannot_even_be_created_is_one_line(tmp_path, photos, monkeypatch):
    import sqlalchemy.exc

    import jrsearch.retrieval.migrations

    def full(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("CREATE TABLE items ...", {}, sqlite3.OperationalError(SQLITE_FULL))

    monkeypatch.setattr(jrsearch.retrieval.migrations, "create", full)  # the new library's schema, made under the lock
    line = one_error_line(index(str(photos), lib=tmp_path / "lib"))
    assert f"no space left on the disk holding library {tmp_path / 'lib'}" in line and "free some space" in line


def _notes(result) -> list[str]:
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    return json.loads(result.stdout)["notes"]


@pytest.mark.slow
def test_a_failed_text_tower_export_is_reported_and_the_next_run_retries_it(tmp_path, photos, monkeypatch):
    """The export lives in the model cache now: a failure is a note, never a failed index run."""
    import jrsearch.retrieval.query_model as query_model

    lib, cache = tmp_path / "lib", tmp_path / "cache"
    monkeypatch.setenv("JRSEARCH_CACHE", str(cache))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(query_model.np, "save", no_space)
        result = index(str(photos), "--json", lib=lib)
    notes = _notes(result)
    assert any("writing the text-tower export needs about" in n and "next time jrsearch loads" in n for n in notes)
    assert json.loads(result.stdout)["indexed"] == 12 and stored_items(lib) == 12
    assert not list(cache.rglob(f"{query_model.EXPORT_DIR}*"))  # no half export

    make_image(photos / "new.jpg", seed=77)  # something to embed: the model loads, and the export is retried
    assert _notes(index(str(photos), "--json", lib=lib)) == []
    assert len(list(cache.rglob(f"{query_model.EXPORT_DIR}/meta.json"))) == 1


def test_thumbnails_are_served_uncached_when_the_cache_cannot_be_written(tmp_path, tiny_encoder, monkeypatch):
    import jrsearch.retrieval.fileio as fileio  # the thumbnail cache writes through it

    library, media = build_library(tmp_path, tiny_encoder, n_images=3)
    client = make_client(library, tiny_encoder, warm=False)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", no_space)
    for path, params in ((media / "rotated.jpg", {"size": 128}), (media / "clip.mp4", {"t": 2.0})):
        response = client.get(f"/api/items/{item_id(library, path)}/thumbnail", params=params)
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg", response.text
        assert max(Image.open(io.BytesIO(response.content)).size) <= 256
    assert not list((library.root / "thumbnails").rglob("*.jpg"))  # nothing cached, nothing half-written

    monkeypatch.undo()
    response = client.get(f"/api/items/{item_id(library, media / 'rotated.jpg')}/thumbnail", params={"size": 128})
    assert response.status_code == 200 and len(list((library.root / "thumbnails").rglob("*-128.jpg"))) == 1


def test_a_short_write_with_too_little_space_left_is_a_full_disk(tmp_path, photos, monkeypatch):
    import jrsearch.retrieval.diskspace as diskspace
    import jrsearch.retrieval.query_model as query_model

    def short_write(*args, **kwargs):  # what numpy's np.save raised on a really full tmpfs: no errno
        raise OSError("3162112 requested and 625632 written")

    monkeypatch.setenv("JRSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(query_model.np, "save", short_write)
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 600_000)
    notes = _notes(index(str(photos), "--json", lib=tmp_path / "lib"))
    assert any("writing the text-tower export needs about" in n and "(586 KiB free)" in n for n in notes)

    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 10 * 2**30)  # room enough: another failure
    monkeypatch.setenv("JRSEARCH_CACHE", str(tmp_path / "cache2"))
    notes = _notes(index(str(photos), "--json", lib=tmp_path / "lib2"))
    assert any("cannot write the text-tower export" in n and "requested and" in n for n in notes)


@pytest.fixture
def tmpfs(tmp_path):
    """Mounts real small filesystems (tmpfs) where this machine lets the tests (root with
    CAP_SYS_ADMIN); skipped elsewhere. The injected-error tests above cover the same paths."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the injected-ENOSPC tests cover this")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounted:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_index_on_a_really_full_filesystem(tmpfs, tmp_path):
    photos = tmp_path / "many"
    for i in range(300):
        make_image(photos / f"i{i:03d}.jpg", seed=i)
    lib = tmpfs("600k") / "lib"
    line = one_error_line(index(str(photos), "--batch-size", "16", lib=lib))
    assert f"no space left on the disk holding library {lib}" in line and "free at least" in line
    committed = stored_items(lib)
    assert 0 < committed < 300  # SQLite rolled the failed batch back and kept the ones before
    with sqlite3.connect(lib / "library.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_text_tower_export_on_a_really_full_filesystem(tmpfs, tmp_path, photos, monkeypatch):
    cache = tmpfs("3m")  # room for little: not for the tiny model's ONNX files nor its ~14 MiB text tower
    monkeypatch.setenv("JRSEARCH_CACHE", str(cache))
    result = index(str(photos), "--json", lib=tmp_path / "lib")
    notes = _notes(result)
    assert any("torch instead of ONNX Runtime" in n for n in notes)
    assert any("writing the text-tower export needs about" in n for n in notes)
    assert stored_items(tmp_path / "lib") == 12 and not list(cache.rglob("query_model*"))
