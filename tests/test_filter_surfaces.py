"""Metadata filters (date taken, place, camera) where users give them: `jrsearch query`'s options,
the API's parameters, and what comes back (the table, `--json`, the echo, `status`). The searches
themselves are a fake `SearchService` (or a stand-in for the cold path) that keeps the request it
received: these tests check the surfaces, not how a store narrows results."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from jrsearch.cli.main import app
from jrsearch.retrieval.request import DATE_FORM, NEAR_FORM, Filters, SearchRequest
from jrsearch.retrieval.service import UnsupportedQuery
from jrsearch.retrieval.types import ModelSpec, ResultSet, SearchResult

runner = CliRunner()
FILTER_ARGS = ["--after", "2024-06", "--before", "2024-12-31", "--near", "43.46,11.88,5", "--camera", " Canon "]
WANTED = Filters.make(None, None, after="2024-06", before="2024-12-31", near="43.46,11.88,5", camera="Canon")
TAKEN = SearchResult(1, 0.9, 7, 70, "/photos/a.jpg", "image", taken_at="2024-06-01T12:30:00+02:00",
                     latitude=43.46, longitude=11.88, camera="Canon EOS R5")
PLAIN = SearchResult(2, 0.8, 8, 80, "/photos/b.jpg", "image")

BAD = [  # what a user types, the option, and the line that names it and the accepted form
    ("--after", "2024-13", f"--after '2024-13' is not a date: use {DATE_FORM}"),
    ("--before", "last week", f"--before 'last week' is not a date: use {DATE_FORM}"),
    ("--near", "200,0", "--near '200,0' is out of range: latitude -90..90, longitude -180..180, radius above 0; "
                        f"use {NEAR_FORM}"),
    ("--near", "abc", f"--near 'abc' is not a place: use {NEAR_FORM}"),
    ("--near", "43.4,11.8,0", "--near '43.4,11.8,0' is out of range"),
]


class FakeService:
    """A `SearchService` answering every search with `results`, keeping each request."""

    def __init__(self, root: Path, results: tuple[SearchResult, ...] = (TAKEN, PLAIN), *,
                 refuse: str | None = None) -> None:
        self.root, self.results, self.refuse = root, results, refuse
        self.spec = ModelSpec("tiny-test", "")
        self.text_encoder = "numpy"
        self.requests: list[SearchRequest] = []

    def modalities(self) -> tuple[str, ...]:
        return ("text", "image")

    def embed(self, modality: str, query: Any) -> np.ndarray:
        return np.ones(4, np.float32) / 2

    def search(self, vector: np.ndarray, request: SearchRequest) -> ResultSet:
        self.requests.append(request)
        if self.refuse:
            raise UnsupportedQuery(self.refuse)
        return ResultSet(self.results)

    def item(self, item_id: int) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"indexes": {}, "with_date_taken": 3, "with_place": 1}

    def warm(self) -> None:
        pass

    def close(self) -> None:
        pass


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


# -- jrsearch query --------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, line", BAD)
def test_query_refuses_a_bad_filter_in_one_line_with_exit_2(tmp_path, option, value, line):
    result = run("query", "a dog", option, value, "--library", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {line}") and result.stderr.count("\n") == 1
    assert not result.stdout


def test_the_cold_path_gets_the_filters_and_json_carries_the_metadata(tmp_path, monkeypatch):
    asked: list[SearchRequest] = []

    def quick_text_search(library: Path, text: str, request: SearchRequest):
        asked.append(request)
        return [TAKEN, PLAIN]

    monkeypatch.setattr("jrsearch.retrieval.quick_search.quick_text_search", quick_text_search)
    folder = tmp_path / "photos"
    result = run("query", "a dog", *FILTER_ARGS, "--under", str(folder), "--glob", "*.jpg", "-k", "3", "--json",
                 "--library", str(tmp_path / "lib"))
    assert result.exit_code == 0, result.output
    assert asked == [SearchRequest("image", 3, Filters.make(folder, "*.jpg", after="2024-06", before="2024-12-31",
                                                                near="43.46,11.88,5", camera="Canon"))]
    first, second = json.loads(result.stdout)
    assert (first["taken_at"], first["latitude"], first["longitude"], first["camera"]) == \
           ("2024-06-01T12:30:00+02:00", 43.46, 11.88, "Canon EOS R5")
    assert not {"taken_at", "latitude", "longitude", "camera"} & set(second)


def test_the_service_path_gets_the_filters_and_the_table_shows_date_and_camera(tmp_path, monkeypatch):
    fake = FakeService(tmp_path)
    monkeypatch.setattr("jrsearch.cli.main.open_service", lambda *args: fake)
    example = tmp_path / "example.jpg"
    example.write_bytes(b"not read by the fake")
    result = run("query", "--image", str(example), *FILTER_ARGS, "--library", str(tmp_path / "lib"))
    assert result.exit_code == 0, result.output
    assert [r.filters for r in fake.requests] == [WANTED]
    header, first, second = result.stdout.splitlines()[:3]
    assert header.split() == ["#", "score", "path", "detail", "taken", "camera"]
    assert "2024-06-01 12:30" in first and "Canon EOS R5" in first
    assert second.split() == ["2", "0.8000", "/photos/b.jpg"]


def test_a_date_from_the_files_mtime_is_shown_as_modified_not_taken(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from jrsearch.cli.web.app import create_app

    exif = dataclasses.replace(TAKEN, taken_source="exif")
    modified = SearchResult(2, 0.8, 8, 80, "/photos/b.png", "image", taken_at="2023-02-03T04:05:06+00:00",
                            taken_source="mtime")
    fake = FakeService(tmp_path, (exif, modified))
    monkeypatch.setattr("jrsearch.cli.main.open_service", lambda *args: fake)
    example = tmp_path / "example.jpg"
    example.write_bytes(b"")
    table = run("query", "--image", str(example), "--library", str(tmp_path / "lib"))
    assert table.exit_code == 0, table.output
    first, second = table.stdout.splitlines()[1:3]
    assert "2024-06-01 12:30" in first and "modified" not in first
    assert "modified 2023-02-03 04:05" in second
    as_json = run("query", "--image", str(example), "--json", "--library", str(tmp_path / "lib"))
    api = TestClient(create_app(fake)).get("/api/search", params={"q": "x"}).json()["results"]
    for first, second in (json.loads(as_json.stdout), api):
        assert (first["taken_source"], second["taken_source"]) == ("exif", "mtime")
        assert second["taken_at"] == "2023-02-03T04:05:06+00:00"


def test_the_table_has_no_metadata_columns_when_no_result_has_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr("jrsearch.cli.main.open_service", lambda *args: FakeService(tmp_path, (PLAIN,)))
    example = tmp_path / "example.jpg"
    example.write_bytes(b"")
    result = run("query", "--image", str(example), "--library", str(tmp_path / "lib"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split() == ["#", "score", "path", "detail"]


def test_filters_on_the_cold_path_import_neither_torch_nor_sqlalchemy(tmp_path):
    """Parsing the filters and handing them to the cold path costs none of the heavy imports."""
    probe = ("import sys, json\nimport jrsearch.retrieval.quick_search as q\nasked = []\n"
             "q.quick_text_search = lambda lib, text, request: asked.append(request) or []\n"
             "from jrsearch.cli.main import app\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
             "print(json.dumps([sorted(m for m in ('torch', 'open_clip', 'sqlalchemy') if m in sys.modules),"
             " asked[0].filters.camera, list(asked[0].filters.near)]), file=sys.stderr)")
    args = ["query", "a dog", *FILTER_ARGS, "--json", "--library", str(tmp_path / "lib")]
    ran = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert json.loads(ran.stderr.strip().splitlines()[-1]) == [[], "Canon", [43.46, 11.88, 5.0]]


# -- jrsearch status -------------------------------------------------------------------------------

STATUS = {"library": "/lib", "model": "tiny-test", "pretrained": "", "dim": 4, "items": {"image": {"ok": 5}},
          "indexes": {}, "bytes_on_disk": 0}


@pytest.mark.parametrize("counts, line", [
    ({"with_date_taken": 3, "with_place": 1}, "metadata  3 with a date taken, 1 with a place"),
    ({}, None),
])
def test_status_says_how_many_have_a_date_and_a_place(tmp_path, monkeypatch, counts, line):
    from jrsearch.retrieval.library import Library

    class Opened:
        def status(self) -> dict[str, Any]:
            return {**STATUS, **counts}

    monkeypatch.setattr(Library, "open", classmethod(lambda cls, *args, **kwargs: Opened()))
    shown = run("status", "--library", str(tmp_path))
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert (line in lines) if line else not any("date taken" in x for x in lines)
    as_json = json.loads(run("status", "--json", "--library", str(tmp_path)).stdout)
    assert {k: as_json[k] for k in counts} == counts


# -- the API ---------------------------------------------------------------------------------------

@pytest.fixture
def api(tmp_path):
    from fastapi.testclient import TestClient

    from jrsearch.cli.web.app import create_app

    fake = FakeService(tmp_path)
    return TestClient(create_app(fake), raise_server_exceptions=False), fake


@pytest.mark.parametrize("option, value, line", BAD)
def test_api_refuses_a_bad_filter_with_422_and_the_same_line(api, option, value, line):
    client, fake = api
    name = option.removeprefix("--")
    text = client.get("/api/search", params={"q": "x", name: value})
    upload = client.post("/api/search/file", params={name: value}, files={"file": ("a.jpg", b"\xff\xd8\xff")})
    for response in (text, upload):
        assert response.status_code == 422
        assert response.json()["detail"].startswith(line.removeprefix("--"))  # `after '2024-13' is not a date: ...`
    assert not fake.requests


def test_api_passes_the_filters_to_the_service_and_echoes_them(api):
    client, fake = api
    params = {"q": "x", "top_k": 5, "under": "/photos", "after": "2024-06", "before": "2024-12-31",
              "near": "43.46,11.88,5", "camera": " Canon "}
    response = client.get("/api/search", params=params)
    assert response.status_code == 200, response.text
    assert fake.requests == [SearchRequest("image", 5, Filters.make("/photos", None, after="2024-06",
                                                                      before="2024-12-31", near="43.46,11.88,5",
                                                                      camera="Canon"))]
    body = response.json()
    query = body["query"]
    assert {k: query[k] for k in ("text", "kind", "top_k", "under", "glob")} == \
           {"text": "x", "kind": "image", "top_k": 5, "under": "/photos", "glob": None}  # as before
    assert {k: query[k] for k in ("after", "before", "near", "camera")} == \
           {"after": "2024-06", "before": "2024-12-31", "near": "43.46,11.88,5", "camera": "Canon"}
    assert query["filters"] == fake.requests[0].filters.to_json()
    assert query["filters"]["near"] == [43.46, 11.88, 5.0] and query["filters"]["camera"] == "Canon"
    first, second = body["results"]
    assert (first["taken_at"], first["latitude"], first["longitude"], first["camera"]) == \
           ("2024-06-01T12:30:00+02:00", 43.46, 11.88, "Canon EOS R5")
    assert (second["taken_at"], second["latitude"], second["longitude"], second["camera"]) == (None,) * 4


def test_api_query_echo_without_filters_is_unchanged(api):
    client, fake = api
    response = client.get("/api/search", params={"q": "x", "after": "", "camera": "  "})  # blank: not set
    assert response.json()["query"] == {"text": "x", "kind": "image", "top_k": 10, "under": None, "glob": None}
    assert fake.requests == [SearchRequest("image", 10, Filters())]


def test_api_upload_search_takes_the_filters_too(api):
    client, fake = api
    from helpers import make_image

    image = make_image(fake.root / "a.jpg", seed=1)
    response = client.post("/api/search/file", params={"camera": "Canon", "after": "2024"},
                           files={"file": ("a.jpg", image.read_bytes())})
    assert response.status_code == 200, response.text
    assert fake.requests[0].filters == Filters.make(None, None, after="2024", camera="Canon")
    assert response.json()["query"]["filters"]["camera"] == "Canon"


def test_api_status_carries_the_metadata_counts(api):
    client, _ = api
    info = client.get("/api/status").json()
    assert (info["with_date_taken"], info["with_place"]) == (3, 1)


def test_a_service_that_cannot_filter_by_metadata_is_a_400_with_its_line(tmp_path):
    from fastapi.testclient import TestClient

    from jrsearch.cli.web.app import create_app

    pytest.importorskip("pyarrow")
    from jrsearch.retrieval.cluster.search import METADATA_UNSUPPORTED, ClusterService

    refused = FakeService(tmp_path, refuse=METADATA_UNSUPPORTED)
    client = TestClient(create_app(refused), raise_server_exceptions=False)
    response = client.get("/api/search", params={"q": "x", "near": "43.46,11.88"})
    assert response.status_code == 400 and response.json() == {"detail": METADATA_UNSUPPORTED}
    # an INDEXDIR whose dataset predates place and camera refuses them before searching
    old = SimpleNamespace(dataset=SimpleNamespace(has_file_metadata=False))
    with pytest.raises(UnsupportedQuery, match="embedded before jrsearch kept them"):
        ClusterService.search(old, np.zeros(4, np.float32),  # type: ignore[arg-type]
                              SearchRequest(filters=Filters.make(None, None, camera="canon")))
