"""Hybrid search: date taken, place and camera stored at index time (schema 4, and the 3 -> 4
migration), the filter columns beside each index, and filtered search through them on both query
paths (the service and the cold path), exact where few match and on a lossy IVF index where many do."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, exif_photo, make_image, make_sound, tone

FIXTURES = Path(__file__).parent / "fixtures"
AREZZO = (43.4633, 11.8797)
PARIS = (48.8566, 2.3522)
CANON = ("Canon", "Canon EOS 5D")
NIKON = ("NIKON CORPORATION", "NIKON D750")


def near(place: tuple[float, float], dlat: float) -> tuple[float, float]:
    return place[0] + dlat, place[1]


@pytest.fixture(scope="module")
def photo_library(tmp_path_factory, tiny_encoder):
    """Photos with EXIF in three folders (trip/ and trip-2/ share a prefix), indexed with the tiny
    model; the numpy text tower exported so the cold path can answer."""
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.query_model import export_text_tower

    base = tmp_path_factory.mktemp("hybrid")
    media = base / "media"
    exif_photo(media / "trip" / "a1.jpg", 1, "2021:04:11 15:47:53", "+02:00", near(AREZZO, 0.001), CANON)
    exif_photo(media / "trip" / "a2.jpg", 2, "2021:04:12 09:00:00", "+02:00", near(AREZZO, -0.002), CANON)
    exif_photo(media / "trip" / "a3.jpg", 3, "2021:04:13 18:30:00", "+02:00", near(AREZZO, 0.01), CANON)
    exif_photo(media / "trip" / "p1.jpg", 4, "2021:06:01 12:00:00", "+02:00", PARIS, NIKON)
    exif_photo(media / "trip" / "far.jpg", 5, "2021:04:14 10:00:00", "+02:00", near(AREZZO, 0.2), CANON)  # 22 km
    exif_photo(media / "trip" / "nikon-arezzo.jpg", 6, "2021:04:14 11:00:00", "+02:00", AREZZO, NIKON)
    exif_photo(media / "old" / "o1.jpg", 7, "2019:05:01 10:00:00", "+02:00", AREZZO, CANON)
    make_image(media / "old" / "plain.jpg", 8)  # no EXIF: its mtime is its date, no place, no camera
    exif_photo(media / "trip-2" / "c1.jpg", 9, "2022:08:01 10:00:00", None, AREZZO, CANON)  # no offset
    library = Library.open(base / "lib", create=True)
    report = run_index(library, tiny_encoder, [media])
    assert not report.failed
    export_text_tower(tiny_encoder, library.root)
    yield library, media
    library.close()


def service_of(library, encoder):
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.service import LibraryService

    return LibraryService(library, SearchEngine(library, encoder=encoder))


def names(results) -> set[str]:
    return {Path(r.path).name for r in results}


def test_metadata_is_stored_at_index_time(photo_library):
    library, _ = photo_library
    with sqlite3.connect(library.root / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
        rows = {Path(bytes(path).decode()).name: tuple(rest) for path, *rest in db.execute(
            "SELECT path, taken_ts, taken_at, taken_source, latitude, longitude, camera_make, camera_model "
            "FROM items")}
        indexes = {row[1] for row in db.execute("PRAGMA index_list(items)")}
    assert {"ix_items_taken", "ix_items_place", "ix_items_camera"} <= indexes
    ts, at, source, lat, lon, make, model = rows["a1.jpg"]
    assert at == "2021-04-11T15:47:53+02:00" and source == "exif"
    assert ts == datetime(2021, 4, 11, 13, 47, 53, tzinfo=timezone.utc).timestamp()
    assert abs(lat - AREZZO[0] - 0.001) < 1e-6 and abs(lon - AREZZO[1]) < 1e-6 and (make, model) == CANON
    plain = rows["plain.jpg"]
    assert plain[2] == "mtime" and plain[3:] == (None, None, None, None)
    status = library.status()
    assert status["with_date_taken"] == 8 and status["with_place"] == 8  # all but plain.jpg
    assert (library.root / "index" / "image.columns" / "meta.json").is_file()


def test_filters_keep_exactly_the_matching_items(photo_library, tiny_encoder):
    from jrsearch.retrieval.request import Filters, SearchRequest

    library, media = photo_library
    service = service_of(library, tiny_encoder)
    vector = service.embed("text", "a photo")

    def found(k: int = 20, **filters) -> set[str]:
        return names(service.search(vector, SearchRequest(top_k=k, filters=Filters.make(**filters))))

    everything = {"a1.jpg", "a2.jpg", "a3.jpg", "p1.jpg", "far.jpg", "nikon-arezzo.jpg", "o1.jpg", "plain.jpg",
                  "c1.jpg"}
    assert found() == everything
    assert found(after="2020", near="43.46,11.88,5", camera="canon", under=media / "trip") == {"a1.jpg", "a2.jpg",
                                                                                               "a3.jpg"}
    assert found(after="2020", near="43.46,11.88,5", camera="canon") == {"a1.jpg", "a2.jpg", "a3.jpg", "c1.jpg"}
    assert found(under=media / "trip") == everything - {"o1.jpg", "plain.jpg", "c1.jpg"}  # not trip-2/
    assert found(under=media / "trip-2") == {"c1.jpg"}
    assert found(camera="NIKON") == {"p1.jpg", "nikon-arezzo.jpg"}
    assert found(camera="eos 5d", before="2021-04-12T00:00:00Z") == {"o1.jpg", "a1.jpg"}
    assert found(after="2021-04-12T00:00:00Z", before="2021-04-14T00:00:00Z") == {"a2.jpg", "a3.jpg"}
    assert found(near="48.85,2.35,10") == {"p1.jpg"}
    assert found(near="43.46,11.88,50", camera="canon", glob="a[12].jpg") == {"a1.jpg", "a2.jpg"}  # glob on top
    two = found(k=2, near="43.46,11.88,5")
    assert len(two) == 2 and two <= found(near="43.46,11.88,5")
    assert found(camera="leica") == set()
    assert found(after="2030") == set()
    assert found(under=media / "nowhere") == set()

    a1 = next(r for r in service.search(vector, SearchRequest(filters=Filters.make(glob="*a1.jpg"))).results)
    assert (a1.taken_at, a1.taken_source, a1.camera) == ("2021-04-11T15:47:53+02:00", "exif", "Canon EOS 5D")
    assert abs(a1.latitude - AREZZO[0] - 0.001) < 1e-6 and abs(a1.longitude - AREZZO[1]) < 1e-6
    assert a1.to_json()["camera"] == "Canon EOS 5D"
    plain = next(r for r in service.search(vector, SearchRequest(filters=Filters.make(glob="*plain.jpg"))).results)
    assert plain.camera is None and plain.latitude is None and "camera" not in plain.to_json()
    assert plain.taken_source == "mtime" and plain.taken_at is not None  # no date inside: its mtime, said so


def test_cold_path_gives_the_service_results_for_a_filtered_text_query(photo_library, tiny_encoder):
    from jrsearch.retrieval.query_model import TextTower
    from jrsearch.retrieval.quick_search import quick_text_search
    from jrsearch.retrieval.request import Filters, SearchRequest

    library, media = photo_library
    service = service_of(library, tiny_encoder)
    tower = TextTower.load(library.root, tiny_encoder.spec, tiny_encoder.dim)
    for text in ("a red square", "a dog on a beach"):
        vector = tower.encode_texts([text])[0]
        for filters in (Filters.make(near="43.46,11.88,5"), Filters.make(after="2021", camera="canon"),
                        Filters.make(under=media / "trip", glob="*a*"), Filters.make(camera="leica")):
            request = SearchRequest(top_k=3, filters=filters)
            quick = quick_text_search(library.root, text, request)
            assert quick is not None
            assert quick == list(service.search(vector, request).results)
    # stale columns (another generation): the cold path declines, the service still answers
    columns = library.root / "index" / "image.columns"
    saved = columns.with_name("saved.columns")
    shutil.copytree(columns, saved)
    try:
        meta = columns / "meta.json"
        meta.write_text(meta.read_text().replace('"generation": ', '"generation": 1000'))
        request = SearchRequest(filters=Filters.make(camera="canon"))
        assert quick_text_search(library.root, "a dog", request) is None
        assert quick_text_search(library.root, "a dog", SearchRequest()) is not None  # unfiltered: unaffected
        assert len(service.search(tower.encode_texts(["a dog"])[0], request).results) == 6
        # a folder of a format before (e.g. no dates in folder order), at the right generation: stale too
        from jrsearch.retrieval.filter_columns import FORMAT

        before = f'"format": {FORMAT - 1}'
        meta.write_text((saved / "meta.json").read_text().replace(f'"format": {FORMAT}', before))
        assert before in meta.read_text() and quick_text_search(library.root, "a dog", request) is None
    finally:
        shutil.rmtree(columns)
        saved.rename(columns)


def test_the_shared_gps_photos_are_found_by_place(tmp_path, tiny_encoder):
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.request import Filters, SearchRequest

    samples = SHARED_DATA / "exif-samples" / "jpg"
    if not samples.is_dir():
        pytest.skip(f"real camera files not found at {samples} (the shared data folder is absent)")
    library = Library.open(tmp_path / "lib", create=True)
    run_index(library, tiny_encoder, [samples / "gps", samples / "exif-org", samples / "Canon_40D.jpg",
                                      samples / "Nikon_D70.jpg"])
    service = service_of(library, tiny_encoder)
    vector = service.embed("text", "a street")
    gps = {p.name for p in (samples / "gps").glob("*.jpg")}
    assert len(gps) == 9
    by_place = service.search(vector, SearchRequest(top_k=50, filters=Filters.make(near="43.467,11.885,5")))
    assert names(by_place.results) == gps
    assert all(r.camera == "NIKON COOLPIX P6000" and r.taken_at.startswith("2008-10-22") for r in by_place.results)
    by_camera = service.search(vector, SearchRequest(top_k=50, filters=Filters.make(camera="coolpix p6000")))
    assert names(by_camera.results) == gps
    assert library.status()["with_place"] == 9
    library.close()


def test_a_video_is_filtered_by_its_container_date_and_place(tmp_path, tiny_encoder):
    import av

    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.request import Filters, SearchRequest

    media = tmp_path / "media"
    media.mkdir()
    for name, metadata in (("sydney.mp4", {"creation_time": "2021-06-01T12:34:56.000000Z",
                                           "location": "-33.8688+151.2093/"}), ("plain.mp4", {})):
        with av.open(str(media / name), "w") as container:
            container.metadata.update(metadata)
            stream = container.add_stream("libx264", rate=4)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for i in range(8):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 30, np.uint8), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    library = Library.open(tmp_path / "lib", create=True)
    assert not run_index(library, tiny_encoder, [media]).failed
    service = service_of(library, tiny_encoder)
    vector = service.embed("text", "a grey wall")
    found = service.search(vector, SearchRequest(kind="video", filters=Filters.make(near="-33.87,151.21,5"))).results
    assert names(found) == {"sydney.mp4"} and found[0].taken_at == "2021-06-01T12:34:56+00:00"
    assert names(service.search(vector, SearchRequest(kind="video", filters=Filters.make(before="2022"))).results) \
        == {"sydney.mp4"}
    library.close()


# -- a lossy index: few and many matching ----------------------------------------------------

DIM = 32
N = 3000


@pytest.fixture
def lossy_library(tmp_path, monkeypatch):
    """N synthetic images with metadata in a library whose index is IVF + PQ (forced small)."""
    from jrsearch.retrieval.library import ImageRecord, Library
    from jrsearch.retrieval.media_metadata import MediaMetadata
    from jrsearch.retrieval.types import ItemStatus, ModelSpec

    monkeypatch.setattr("jrsearch.retrieval.index.EXACT_MAX", 100)
    monkeypatch.setenv("JRSEARCH_INDEX_MEMORY", "60000")
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, N)] + 0.5 * rng.standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = datetime(2020, 1, 1, tzinfo=timezone.utc)
    records = []
    for i in range(N):
        camera = ("Rare", "Cam") if i % 600 == 0 else ("Canon", "EOS") if i % 10 < 3 else ("Sony", "A7")
        records.append(ImageRecord(
            path=f"/photos/{'north' if i % 2 else 'south'}/{i:05d}.jpg", size=1, mtime_ns=0, content_hash=None,
            status=ItemStatus.INDEXED, vectors=vectors[i:i + 1],
            metadata=MediaMetadata(taken_at=start + timedelta(days=i % 365), taken_source="exif",
                                   latitude=AREZZO[0] if i % 4 == 0 else PARIS[0], longitude=AREZZO[1]
                                   if i % 4 == 0 else PARIS[1], camera_make=camera[0], camera_model=camera[1])))
    library = Library.open(tmp_path / "lib", create=True)
    library.adopt_model(ModelSpec("fixture-model", ""), DIM)
    library.write(records)
    library.save_indexes()
    library.close()
    library = Library.open(tmp_path / "lib")
    index = library.index("image")
    assert index.layout.nlist and index.layout.codec.startswith("PQ"), index.factory
    assert index.codes is not None and len(index.codes) == N  # saved with the index, read back beside it
    yield library, vectors, rng
    library.close()


def exact_filtered(library, query: np.ndarray, keep, k: int) -> list[int]:
    """Brute force: the k best vector ids among those whose item passes `keep(i)`, on the stored rows."""
    ids, _ = library.shards.stored("image")
    rows = library.shards.source("image").get_stored(ids).astype(np.float32)
    scores = rows @ query
    kept = [(float(s), int(v)) for s, v in zip(scores, ids, strict=True) if keep(int(v) - 1)]
    kept.sort(key=lambda pair: (-pair[0], pair[1]))
    return [v for _, v in kept[:k]]


def test_lossy_index_gives_min_k_matching_equal_to_exact(lossy_library, monkeypatch):
    from jrsearch.retrieval import filtered_search
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.request import Filters

    library, vectors, rng = lossy_library
    engine = SearchEngine(library)
    queries = vectors[rng.integers(0, N, 4)] + 0.1 * rng.standard_normal((4, DIM)).astype(np.float32)
    south_since_march = (Filters(under="/photos/south/", after=datetime(2020, 3, 1, tzinfo=timezone.utc).timestamp()),
                         lambda i: i % 2 == 0 and i % 365 >= 60)  # ~41% of the items
    cases = [  # (filters, which item indexes pass, the plan: exact, the code table, the selector ("ann"), "wide")
        (Filters(camera="rare"), lambda i: i % 600 == 0, "exact"),  # 5 match: fewer than k
        (Filters(camera="canon", under="/photos/north/"), lambda i: i % 10 < 3 and i % 2 == 1, "exact"),
        (Filters.make(near="43.46,11.88,5", camera="canon"), lambda i: i % 4 == 0 and i % 10 < 3 and i % 600, "ann"),
        (*south_since_march, "ann"),
        (*south_since_march, "codes"),
        (Filters(camera="canon", under="/photos/north/"), lambda i: i % 10 < 3 and i % 2 == 1, "codes"),
        (*south_since_march, "wide"),
    ]
    plans: list[str] = []

    def recorded(real):
        def plan(*args, **kwargs):
            answer = real(*args, **kwargs)
            plans.append(answer[2].path)
            return answer

        return plan

    for name in ("filtered_plan", "wide_plan"):
        monkeypatch.setattr(filtered_search, name, recorded(getattr(filtered_search, name)))
    for filters, keep, path in cases:
        monkeypatch.setattr(filtered_search, "EXACT_FILTER_MAX", 30_000 if path == "exact" else 10)
        monkeypatch.setattr(filtered_search, "CODE_FILTER_MAX", 30_000 if path == "codes" else None)
        monkeypatch.setattr(filtered_search, "WIDE_SHARE", 0.25 if path == "wide" else 2.0)
        matching = sum(keep(i) for i in range(N))
        plans.clear()
        for query in queries:
            results = engine.search(query, "image", 10, filters)
            assert len(results) == min(10, matching)
            assert [r.vector_id for r in results] == exact_filtered(library, query, keep, 10)
        assert set(plans) == {path}, (filters, plans)
    assert engine.search(queries[0], "image", 10, Filters(camera="leica")) == []
    assert engine.search(queries[0], "image", 10, Filters(after=datetime(2030, 1, 1).timestamp())) == []


# -- the 3 -> 4 migration --------------------------------------------------------------------


def v3_library(tmp_path: Path) -> tuple[Path, Path]:
    """The version-3 fixture with its files written under tmp_path/files (gone.jpg deleted)."""
    with tarfile.open(FIXTURES / "v3_library.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    files = tmp_path / "files"
    exif_photo(files / "photos" / "canon.jpg", 1, "2021:04:11 15:47:53", "+02:00", AREZZO, CANON)
    exif_photo(files / "photos" / "nikon.jpg", 2, "2020:01:02 03:04:05", "-05:00", PARIS, NIKON)
    make_image(files / "photos" / "plain.jpg", 3)
    exif_photo(files / "photos" / "gone.jpg", 4, "2021:04:11 15:47:53", "+02:00", AREZZO, CANON).unlink()
    make_sound(files / "sounds" / "tone.wav", tone(440, 1.0))
    (files / "texts").mkdir()
    (files / "texts" / "captions.txt").write_text("a dog\na cat\n")
    root = tmp_path / "lib"
    with sqlite3.connect(root / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        db.execute("UPDATE items SET path = CAST(replace(CAST(path AS TEXT), '/FIXTURE', ?) AS BLOB)",
                   (str(files),))
    return root, files


def metadata_rows(root: Path) -> dict[str, tuple]:
    with sqlite3.connect(root / "library.db") as db:
        return {Path(bytes(path).decode()).name: tuple(rest) for path, *rest in db.execute(
            "SELECT path, taken_at, taken_source, latitude, longitude, camera_make, camera_model FROM items")}


def test_version_3_library_gains_metadata_without_reembedding(tmp_path, monkeypatch):
    from jrsearch.retrieval import migrations
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.request import Filters

    root, _ = v3_library(tmp_path)
    before = {p.name: p.read_bytes() for p in (root / "vectors").rglob("*.f16")}
    library = Library.open(root)
    with sqlite3.connect(root / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
        assert db.execute(f"SELECT 1 FROM sqlite_master WHERE name = '{migrations.steps.V4_PROGRESS}'").fetchone() \
            is None
    assert {p.name: p.read_bytes() for p in (root / "vectors").rglob("*.f16")} == before  # nothing embedded again
    meta = json.loads((root / "index" / "image.columns" / "meta.json").read_text())  # written by the migration
    with library.store.read() as catalog:
        assert meta["generation"] == catalog.index_state("image").generation
    rows = metadata_rows(root)
    assert rows["canon.jpg"][:2] == ("2021-04-11T15:47:53+02:00", "exif") and rows["canon.jpg"][4:] == CANON
    assert abs(rows["canon.jpg"][2] - AREZZO[0]) < 1e-6
    assert rows["nikon.jpg"][:2] == ("2020-01-02T03:04:05-05:00", "exif") and rows["nikon.jpg"][4:] == NIKON
    assert rows["plain.jpg"][1] == "mtime" and rows["plain.jpg"][2:] == (None,) * 4
    assert rows["gone.jpg"] == (None,) * 6  # deleted before migrating: NULLs
    assert rows["tone.wav"][1] == "mtime"
    assert rows["captions.txt"] == rows["broken.jpg"] == (None,) * 6  # text corpora and failures are not read
    assert library.status()["with_date_taken"] == 2 and library.status()["with_place"] == 2

    from jrsearch.retrieval.engine import SearchEngine

    engine = SearchEngine(library)
    query = library.shards.stored("image")[1][0]
    assert names(engine.search(query, "image", 10, Filters(camera="canon"))) == {"canon.jpg"}
    assert names(engine.search(query, "image", 10, Filters.make(after="2021"))) >= {"canon.jpg"}
    assert names(engine.search(query, "image", 10, Filters.make(near="48.85,2.35,10"))) == {"nikon.jpg"}
    library.close()


def test_interrupted_metadata_migration_resumes_where_it_stopped(tmp_path, monkeypatch):
    from jrsearch.retrieval import media_metadata, migrations
    from jrsearch.retrieval.library import Library

    root, _ = v3_library(tmp_path)
    monkeypatch.setattr(migrations, "METADATA_BATCH", 1)
    real = media_metadata.file_metadata
    read: list[str] = []

    def dies_on_the_third_file(path):
        if len(read) == 2:
            raise KeyboardInterrupt
        read.append(path.name)
        return real(path)

    monkeypatch.setattr(media_metadata, "file_metadata", dies_on_the_third_file)
    with pytest.raises(KeyboardInterrupt):
        Library.open(root)
    with sqlite3.connect(root / "library.db") as db:  # still version 3, two files done and committed
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        assert db.execute(f"SELECT last_item FROM {migrations.steps.V4_PROGRESS}").fetchone()[0] == 2
    assert read == ["canon.jpg", "nikon.jpg"] and metadata_rows(root)["nikon.jpg"][5] == NIKON[1]

    read.clear()
    monkeypatch.setattr(media_metadata, "file_metadata", lambda path: read.append(path.name) or real(path))
    Library.open(root).close()
    assert read == ["plain.jpg", "gone.jpg", "tone.wav"]  # resumed after the last commit, nothing read twice
    rows = metadata_rows(root)
    assert rows["canon.jpg"][5] == CANON[1] and rows["plain.jpg"][1] == "mtime"


def test_version_1_library_reaches_version_4(tmp_path):
    from jrsearch.retrieval.library import Library

    with tarfile.open(FIXTURES / "v1_library.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = next(p.parent for p in tmp_path.rglob("library.db"))
    Library.open(root).close()
    with sqlite3.connect(root / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
        assert db.execute("SELECT count(*) FROM items WHERE taken_at IS NOT NULL").fetchone()[0] == 0  # files absent
