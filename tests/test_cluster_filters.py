"""Filters on an INDEXDIR (`retrieval/cluster/filters.py`): resolved in the dataset's parquet metadata
before the search, equal to exact filtered search when few match, never short; a dataset embedded
before date taken, place and camera were kept still filters by folder and by modification time."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import exif_photo, make_image

pytest.importorskip("pyarrow", reason="the cluster extra is not installed: pip install -e '.[cluster]'")

from jrsearch.indexer.cluster.build import BuildOptions, build_single
from jrsearch.retrieval import filtered_search
from jrsearch.retrieval.cluster.dataset import DatasetPlan, DatasetWriter, EmbeddingDataset, item_id
from jrsearch.retrieval.cluster.search import ClusterService
from jrsearch.retrieval.encoders import TINY_TEST_MODEL
from jrsearch.retrieval.request import Filters, SearchRequest
from jrsearch.retrieval.service import UnsupportedQuery

SHARDS, PER, DIM = 2, 600, 64
DAY = 86_400
START = int(datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp())
ARETINE, PARIS = (43.46, 11.88), (48.86, 2.35)  # 1,100 km apart
OLD_COLUMNS = ("image_path", "caption", "size", "width", "height", "mtime_ns", "id")


def mtime_of(shard: int, i: int) -> int | None:
    return None if i % 50 == 7 else (START + ((shard * PER + i) % 365) * DAY) * 1_000_000_000  # a year; some unknown


def taken_of(shard: int, i: int) -> float | None:
    """The date taken: another day than the file's modification time; unknown for some."""
    return None if i % 50 == 11 else START + ((shard * PER + i * 7) % 365) * DAY + 0.5


def place_of(shard: int, i: int) -> tuple[float, float] | None:
    return ARETINE if i % 10 == 0 else PARIS if i % 10 == 1 else None


def camera_of(shard: int, i: int) -> str | None:
    return None if i % 5 == 0 else ("Canon EOS 5D", "NIKON D70", None)[i % 3]


def write_dataset(folder: Path) -> None:
    rng = np.random.default_rng(8)
    writer = DatasetWriter(str(folder), DatasetPlan(TINY_TEST_MODEL, DIM, SHARDS, PER, ["synthetic"], SHARDS * PER))
    means = rng.standard_normal((40, DIM)).astype(np.float32)
    for s in range(SHARDS):
        x = means[rng.integers(0, 40, PER)] + 0.5 * rng.standard_normal((PER, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        taken = [taken_of(s, i) for i in range(PER)]
        places = [place_of(s, i) for i in range(PER)]
        writer.write_shard(s, x, {
            "image_path": [f"/data/{'a' if i % 3 else 'b'}{s}/{i}.jpg" for i in range(PER)],
            "caption": [None] * PER, "size": [1] * PER, "width": [8] * PER, "height": [8] * PER,
            "mtime_ns": [mtime_of(s, i) for i in range(PER)], "id": [item_id(s, i) for i in range(PER)],
            "taken_at": [datetime.fromtimestamp(t, timezone.utc).isoformat() if t else None for t in taken],
            "taken_ts": taken, "taken_source": ["exif" if t else None for t in taken],
            "latitude": [p[0] if p else None for p in places], "longitude": [p[1] if p else None for p in places],
            "camera": [camera_of(s, i) for i in range(PER)]}, {"items": PER})


def without_file_metadata(folder: Path) -> None:
    """The dataset as `cluster embed` wrote it before it kept date taken, place and camera."""
    import pyarrow.parquet as pq

    for path in (folder / "metadata").glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.select(list(OLD_COLUMNS)), path)


def make_indexdir(root: Path, old: bool = False) -> tuple[Path, EmbeddingDataset]:
    write_dataset(root / "vectors")
    if old:
        without_file_metadata(root / "vectors")
    build_single(str(root / "vectors"), root / "index", BuildOptions(factory="IVF16,PQ8"))  # lossy, like at scale
    return root / "index", EmbeddingDataset.open(str(root / "vectors"))


@pytest.fixture(scope="module")
def indexdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EmbeddingDataset]:
    return make_indexdir(tmp_path_factory.mktemp("cluster-filters"))


@pytest.fixture(scope="module")
def old_indexdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EmbeddingDataset]:
    return make_indexdir(tmp_path_factory.mktemp("cluster-filters-old"), old=True)


def exact(dataset: EmbeddingDataset, query: np.ndarray, keep, k: int) -> list[int]:
    """Brute force over the dataset's float16 rows: the k best global ids whose (shard, row) passes `keep`."""
    ids, scores = [], []
    for s in range(SHARDS):
        rows = [i for i in range(PER) if keep(s, i)]
        ids += [int(dataset.offsets[s]) + i for i in rows]
        scores += (np.asarray(dataset.vectors(s)[rows], np.float32) @ query).tolist()
    return [ids[i] for i in np.lexsort((ids, -np.asarray(scores)))[:k]]


def between(when, after_day: int, before_day: int | None = None):
    """Whether a row's time (`when(shard, row)`: seconds, or ns for mtime; None unknown) is in the days."""
    scale = 10**9 if when is mtime_of else 1
    lo = (START + after_day * DAY) * scale
    hi = (START + before_day * DAY) * scale if before_day is not None else float("inf")
    return lambda s, i: when(s, i) is not None and lo <= when(s, i) < hi  # type: ignore[operator]


def dated(under: str | None, after_day: int, before_day: int | None = None, **more: str) -> Filters:
    return dataclasses.replace(Filters.make(under, **more), after=float(START + after_day * DAY),
                               before=None if before_day is None else float(START + before_day * DAY))


def check_equal_to_exact(root: Path, dataset: EmbeddingDataset, cases: list, monkeypatch) -> None:
    """Each (filters, which (shard, row) pass) answered as exact filtered search answers it."""
    service = ClusterService(root)
    queries = np.asarray(dataset.vectors(0)[:3], np.float32) + 0.05
    try:
        for exact_max in (30_000, 10):  # exact over the dataset's rows; through the index, kept ids only
            monkeypatch.setattr(filtered_search, "EXACT_FILTER_MAX", exact_max)
            for filters, keep in cases:
                passing = {int(dataset.offsets[s]) + i for s in range(SHARDS) for i in range(PER) if keep(s, i)}
                assert 0 < len(passing) <= 400, filters  # selective: a fraction of the 1,200
                for query in queries:
                    found = service.search(query, SearchRequest(top_k=10, filters=filters))
                    assert len(found) == min(10, len(passing))
                    assert {r.vector_id for r in found} <= passing
                    if exact_max > len(passing):
                        assert [r.vector_id for r in found] == exact(dataset, query, keep, 10)
        assert service.search(queries[0], SearchRequest(filters=Filters.make(None, after="2031"))).results == ()
    finally:
        service.close()


def test_folder_date_camera_and_place_filters_on_an_indexdir_equal_exact_search(indexdir, monkeypatch):
    root, dataset = indexdir
    assert dataset.has_file_metadata
    check_equal_to_exact(root, dataset, [
        (Filters.make("/data/b1"), lambda s, i: s == 1 and i % 3 == 0),
        (dated(None, 100, 110), between(taken_of, 100, 110)),  # the date taken, not the modification time
        (dated("/data/a0", 300), lambda s, i: s == 0 and i % 3 and between(taken_of, 300)(s, i)),
        (Filters.make(None, camera="nikon"), lambda s, i: camera_of(s, i) == "NIKON D70"),  # any case, a part
        (Filters.make(None, near="43.46,11.88,50"), lambda s, i: place_of(s, i) == ARETINE),
        (dated(None, 0, 200, camera="EOS"),
         lambda s, i: camera_of(s, i) == "Canon EOS 5D" and between(taken_of, 0, 200)(s, i)),
    ], monkeypatch)


def test_results_on_an_indexdir_carry_date_taken_place_and_camera(indexdir):
    root, dataset = indexdir
    service = ClusterService(root)
    try:
        found = service.search(np.asarray(dataset.vectors(0)[0], np.float32),
                               SearchRequest(top_k=5, filters=Filters.make(None, near="43.46,11.88,50")))
        assert len(found) == 5
        for result in found.results:
            s = int(np.searchsorted(dataset.offsets, result.vector_id, side="right")) - 1
            i = result.vector_id - int(dataset.offsets[s])
            assert (result.latitude, result.longitude) == pytest.approx(ARETINE)
            assert result.camera == camera_of(s, i)
            assert result.taken_source == ("exif" if taken_of(s, i) else None)
            assert result.to_json()["latitude"] == pytest.approx(ARETINE[0])
        status = service.status()  # as a library's: dates from the files themselves, places
        assert status["with_date_taken"] == sum(taken_of(s, i) is not None for s in range(SHARDS) for i in range(PER))
        assert status["with_place"] == sum(place_of(s, i) is not None for s in range(SHARDS) for i in range(PER))
    finally:
        service.close()


def test_a_dataset_embedded_before_file_metadata_filters_by_folder_and_modification_time(old_indexdir, monkeypatch):
    root, dataset = old_indexdir
    assert not dataset.has_file_metadata
    check_equal_to_exact(root, dataset, [
        (Filters.make("/data/b1"), lambda s, i: s == 1 and i % 3 == 0),
        (dated(None, 100, 102), between(mtime_of, 100, 102)),
        (dated("/data/a0", 300), lambda s, i: s == 0 and i % 3 and between(mtime_of, 300)(s, i)),
    ], monkeypatch)
    service = ClusterService(root)
    try:
        for filters in (Filters.make(None, near="43.4,11.8"), Filters.make(None, camera="canon")):
            with pytest.raises(UnsupportedQuery, match="embedded before jrsearch kept them"):
                service.search(np.zeros(DIM, np.float32), SearchRequest(filters=filters))
        assert "with_place" not in service.status()  # unknown, not 0
    finally:
        service.close()


def test_cluster_embed_keeps_what_each_photo_says_of_itself(tmp_path):
    """`cluster embed`'s decode task reads a photo's EXIF as `jrsearch index` does, and its shard keeps
    date taken, place and camera (null where unknown), with no Ray: the decode and write steps."""
    from jrsearch.indexer.cluster.embed import EmbedReport, _write
    from jrsearch.indexer.cluster.sources import decode_chunk, plan_sources

    photos = tmp_path / "photos"
    exif_photo(photos / "a.jpg", 1, taken="2021:06:01 12:30:00", offset="+02:00", place=ARETINE,
               camera=("Canon", "Canon EOS 5D"))
    make_image(photos / "b.png", 2, fmt="PNG")  # says nothing of itself: its date is its modification time
    (photos / "c.jpg").write_bytes(b"not a jpeg")
    chunk, = plan_sources([str(photos)]).chunks(10, set())
    decoded = decode_chunk(chunk, lambda image: np.zeros((3, 4, 4), np.float32), 4)
    writer = DatasetWriter(str(tmp_path / "vectors"), DatasetPlan(TINY_TEST_MODEL, 4, 1, 10, [str(photos)], 3))
    _write(writer, 0, {row["pos"]: {**row, "embedding": np.ones(4, np.float16)} for row in decoded}, EmbedReport())
    dataset = EmbeddingDataset.open(str(tmp_path / "vectors"))
    assert dataset.has_file_metadata and dataset.ntotal == 2  # c.jpg failed, and is not a row
    rows = {Path(row["image_path"]).name: row for row in dataset.metadata([0, 1]).values()}
    photo, plain = rows["a.jpg"], rows["b.png"]
    assert photo["taken_at"] == "2021-06-01T12:30:00+02:00" and photo["taken_source"] == "exif"
    assert photo["taken_ts"] == datetime(2021, 6, 1, 10, 30, tzinfo=timezone.utc).timestamp()
    assert (photo["latitude"], photo["longitude"]) == pytest.approx(ARETINE, abs=1e-4)
    assert photo["camera"] == "Canon EOS 5D"  # the make is not said twice
    assert plain["taken_source"] == "mtime" and plain["taken_ts"] == pytest.approx(plain["mtime_ns"] / 1e9)
    assert (plain["latitude"], plain["longitude"], plain["camera"]) == (None, None, None)
