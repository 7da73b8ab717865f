"""The one atomic-write helper and the one content hash."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from jrsearch.retrieval.fileio import (
    keep_json_entry,
    read_json_object,
    write_atomic,
    write_bytes_atomic,
    write_json_atomic,
)
from jrsearch.retrieval.hashing import content_hash, file_hash, hash_stream


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    write_bytes_atomic(target, b"old content")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"new co")
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.bin"
    with pytest.raises(ValueError):
        write_atomic(target, lambda tmp: (tmp.write_bytes(b"x"), int("not a number")))
    assert list((tmp_path / "sub").iterdir()) == []


def test_successful_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}
    assert target.read_text() == json.dumps({"a": 2, "b": [1, 2]}, indent=1)
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_kept_json_entries_merge_and_survive_bad_files(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    assert read_json_object(record) == {}
    keep_json_entry(record, "a", 1)
    keep_json_entry(record, "b", {"x": 2})
    assert read_json_object(record) == {"a": 1, "b": {"x": 2}}
    record.write_text("[1, 2]")  # valid JSON, not an object: replaced, not crashed on
    assert read_json_object(record) == {}
    keep_json_entry(record, "c", 3)
    assert json.loads(record.read_text()) == {"c": 3}
    record.write_text('{"half')  # truncated
    assert read_json_object(record) == {}


def test_keeping_an_entry_where_nothing_can_be_written_is_silent(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the record's folder should be")  # fails even for root, unlike chmod
    keep_json_entry(blocker / "record.json", "a", 1)
    assert read_json_object(blocker / "record.json") == {}


@pytest.mark.parametrize("data", [b"", b"jrsearch", bytes(range(256)) * 9000])
def test_hashes_match_the_stored_blake2b_digest(tmp_path: Path, data: bytes) -> None:
    expected = hashlib.blake2b(data, digest_size=20).hexdigest()
    path = tmp_path / "f"
    path.write_bytes(data)
    assert content_hash(data) == expected
    assert hash_stream(io.BytesIO(data)) == expected
    assert file_hash(path) == expected
