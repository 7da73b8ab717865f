"""`--backend auto` runs the export on the runtime and batch size measured fastest on this machine,
measured once and recorded beside the export (`retrieval/encoders/tuning.py`)."""

import json

import pytest

from jrsearch.retrieval.encoders import TINY_TEST_MODEL, load_encoder, tuning


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch, tiny_onnx_encoder):
    """A cache holding the tiny model's export and no tuning record yet."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(tiny_onnx_encoder.folder.parents[2], cache)
    for record in cache.rglob(tuning.TUNING):
        record.unlink()
    monkeypatch.setenv("JRSEARCH_CACHE", str(cache))
    return cache


def _records(cache) -> dict:
    (record,) = cache.rglob(tuning.TUNING)
    return json.loads(record.read_text())


def test_the_first_open_measures_every_candidate_and_later_ones_read_the_record(fresh_cache, monkeypatch):
    encoder = load_encoder(TINY_TEST_MODEL)
    (choice,) = _records(fresh_cache).values()
    assert set(choice["images_per_s"]) == {"openvino 16", "onnx 8", "onnx 16"}
    assert all(speed > 0 for speed in choice["images_per_s"].values())
    best = max(choice["images_per_s"], key=choice["images_per_s"].get)
    assert best == f"{choice['runtime']} {choice['batch']}" == f"{encoder.backend} {encoder.batch_size}"

    def no_more_measuring(encoders):
        raise AssertionError("measured again although this machine's choice is recorded")

    monkeypatch.setattr(tuning, "measure", no_more_measuring)
    again = load_encoder(TINY_TEST_MODEL)
    assert (again.backend, again.batch_size, again.notes) == (encoder.backend, encoder.batch_size, [])


def test_another_machine_or_another_backend_measures_for_itself(fresh_cache, monkeypatch):
    load_encoder(TINY_TEST_MODEL)
    monkeypatch.setattr(tuning, "_cpu_name", lambda: "another CPU")
    load_encoder(TINY_TEST_MODEL)
    encoder = load_encoder(TINY_TEST_MODEL, backend="onnx")  # only ONNX Runtime's batch sizes compete
    records = _records(fresh_cache)
    assert len(records) == 3
    only_onnx = next(choice for key, choice in records.items() if key.endswith("| fp32 | onnx"))
    assert set(only_onnx["images_per_s"]) == {"onnx 8", "onnx 16"}
    assert encoder.backend == "onnx" and encoder.batch_size == only_onnx["batch"]


def test_a_damaged_record_is_measured_again(fresh_cache):
    load_encoder(TINY_TEST_MODEL)
    (record,) = fresh_cache.rglob(tuning.TUNING)
    key = next(iter(json.loads(record.read_text())))
    record.write_text(json.dumps({key: {"runtime": "quantum", "batch": -1}}))
    encoder = load_encoder(TINY_TEST_MODEL)
    assert encoder.backend in tuning.BATCHES and _records(fresh_cache)[key]["runtime"] == encoder.backend


def test_a_cache_that_cannot_be_written_runs_untuned_rather_than_measuring_every_time(fresh_cache, monkeypatch):
    measured = []
    monkeypatch.setattr(tuning, "measure", measured.append)
    monkeypatch.setattr(tuning.os, "access", lambda path, mode: False)  # root may write anywhere: say it may not
    encoder = load_encoder(TINY_TEST_MODEL)
    assert measured == [] and (encoder.backend, encoder.batch_size) == ("openvino", tuning.DEFAULT_BATCH)
    assert not list(fresh_cache.rglob(tuning.TUNING))
