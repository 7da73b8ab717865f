"""`jrsearch serve` API: every endpoint, and every refusal (bad input, unsafe file, no token)."""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import build_library, item_id, make_client, make_image
from PIL import Image

from jrsearch.indexer.pipeline import run_index
from jrsearch.retrieval.engine import SearchEngine
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.types import MediaKind

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    library, media = build_library(tmp_path_factory.mktemp("served"), tiny_encoder)
    return make_client(library, tiny_encoder), library, media


# -- search ---------------------------------------------------------------------------------

def test_text_search_ranks_like_the_engine(served, tiny_encoder):
    client, library, _ = served
    response = client.get("/api/search", params={"q": "a dog on a beach", "top_k": 5})
    assert response.status_code == 200
    body = response.json()
    engine = SearchEngine(library, encoder=tiny_encoder)
    expected = engine.search(engine.embed_text("a dog on a beach"), top_k=5)
    assert [r["item_id"] for r in body["results"]] == [r.item_id for r in expected]
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]
    first = body["results"][0]
    assert first["thumbnail"] == f"/api/items/{first['item_id']}/thumbnail?size=256"
    assert first["media"] == f"/api/items/{first['item_id']}/media"
    assert body["query"] == {"text": "a dog on a beach", "kind": "image", "top_k": 5, "under": None, "glob": None}


def test_text_queries_use_the_exported_text_tower_when_there_is_one(small, tiny_encoder):
    from jrsearch.retrieval.query_model import export_text_tower

    _, library, _ = small
    assert export_text_tower(tiny_encoder, library.root)  # as `jrsearch index` does
    client = make_client(library, tiny_encoder)
    assert client.get("/api/status").json()["server"]["text_encoder"] == "numpy text tower"
    body = client.get("/api/search", params={"q": "a dog on a beach", "top_k": 4}).json()
    engine = SearchEngine(library, encoder=tiny_encoder)
    expected = engine.search(engine.embed_text("a dog on a beach"), top_k=4)
    assert [r["item_id"] for r in body["results"]] == [r.item_id for r in expected]
    assert [r["score"] for r in body["results"]] == pytest.approx([r.score for r in expected], abs=1e-3)


def test_a_repeated_text_is_embedded_once(served, tiny_encoder, tmp_path, monkeypatch):
    _, library, _ = served
    monkeypatch.setenv("JRSEARCH_CACHE", str(tmp_path / "no-exports"))  # text goes through the engine
    calls: list[str] = []

    class Counting(SearchEngine):
        def embed_text(self, text: str) -> np.ndarray:
            calls.append(text)
            return super().embed_text(text)

    client = make_client(library, tiny_encoder, engine=Counting(library, encoder=tiny_encoder), warm=False)
    first = client.get("/api/search", params={"q": "boats"}).json()
    again = client.get("/api/search", params={"q": "boats", "kind": "text"}).json()
    assert calls == ["boats"] and again["results"] and first["results"] != again["results"]
    assert first["took_ms"] >= first["embed_ms"] > again["embed_ms"] and first["search_ms"] > 0


def test_filters_under_and_glob(served):
    client, _, media = served
    under = client.get("/api/search", params={"q": "x", "under": str(media / "sub"), "top_k": 50}).json()["results"]
    assert len(under) == 4 and all(r["path"].startswith(str(media / "sub") + os.sep) for r in under)
    glob = client.get("/api/search", params={"q": "x", "glob": "img0[12].jpg"}).json()["results"]
    assert sorted(r["name"] for r in glob) == ["img01.jpg", "img02.jpg"]


def test_image_to_text_results_carry_the_text(served):
    client, _, media = served
    upload = (media / "rotated.jpg").read_bytes()
    body = client.post("/api/search/file", params={"kind": "text"},
                       files={"file": ("q.jpg", upload, "image/jpeg")}).json()
    assert {r["text"] for r in body["results"]} == {"a red square", "a dog on a beach", "blue sky over the sea"}
    assert all(r["thumbnail"] is None and r["line"] in (1, 2, 3) for r in body["results"])


def test_video_results_carry_their_time_and_a_frame_thumbnail(served):
    client, _, _ = served
    results = client.get("/api/search", params={"q": "x", "kind": "video"}).json()["results"]
    assert len(results) == 1  # one result per file, at its best segment
    hit = results[0]
    assert hit["name"] == "clip.mp4" and (hit["start_s"], hit["end_s"]) in [(0.0, 2.0), (2.0, 4.0)]
    frames = {}
    for t in (0.0, 2.0):
        response = client.get(f"/api/items/{hit['item_id']}/thumbnail", params={"t": t})
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        frames[t] = Image.open(io.BytesIO(response.content)).convert("L").getpixel((10, 10))
    assert frames[0.0] < 20 < 50 < frames[2.0]  # a later frame, not the first one again


def test_upload_image_finds_itself_first(served):
    client, library, media = served
    data = (media / "img04.jpg").read_bytes()
    body = client.post("/api/search/file", files={"file": ("anything.bin", data, "application/octet-stream")}).json()
    assert body["results"][0]["item_id"] == item_id(library, media / "img04.jpg")
    assert body["results"][0]["score"] > 0.99
    assert body["query"]["file"] == "anything.bin" and body["query"]["file_type"] == "image"


WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)


def test_audio_upload_without_audio_support_is_refused_clearly(served, tiny_encoder):
    _, library, _ = served
    client = make_client(library, tiny_encoder)
    assert client.get("/api/status").json()["server"]["audio_search"] is False  # no tower in this library
    response = client.post("/api/search/file", files={"file": ("a.wav", WAV, "audio/wav")})
    assert response.status_code == 415
    assert response.json()["detail"].startswith("audio search needs an audio tower")


def test_audio_upload_goes_to_the_audio_tower(served, tiny_encoder):
    _, library, _ = served
    target = np.asarray(tiny_encoder.encode_texts(["a dog on a beach"])[0])
    heard: list[bytes] = []

    class AudioEngine(SearchEngine):
        def modalities(self) -> tuple[str, ...]:
            return ("text", "image", "audio")

        def embed(self, modality: str, query) -> np.ndarray:
            assert modality == "audio"
            heard.append(Path(query).read_bytes())
            return target

    client = make_client(library, tiny_encoder, engine=AudioEngine(library, encoder=tiny_encoder))
    body = client.post("/api/search/file", params={"kind": "text"}, files={"file": ("a.wav", WAV, "audio/wav")}).json()
    assert heard == [WAV]
    assert body["query"]["file_type"] == "audio" and body["results"][0]["text"] == "a dog on a beach"


@pytest.mark.parametrize("params, message", [
    ({"q": "x", "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
    ({"q": "x", "top_k": 100000}, "top_k: Input should be less than or equal to 200"),
    ({"q": "x", "kind": "pdf"}, "kind: Input should be 'image', 'text', 'video' or 'audio'"),
    ({}, "q: Field required (or like: an item id, or add: a term)"),
    ({"q": ""}, "q: String should have at least 1 character"),
    ({"q": "x" * 1001}, "q: String should have at most 1000 characters"),
])
def test_bad_search_parameters_are_422_with_a_message(served, params, message):
    client, _, _ = served
    response = client.get("/api/search", params=params)
    assert response.status_code == 422 and response.json() == {"detail": message}


def test_blank_query_is_400(served):
    client, _, _ = served
    response = client.get("/api/search", params={"q": "   "})
    assert response.status_code == 400 and response.json()["detail"].startswith("empty query")


def test_bad_uploads_are_refused(served, tiny_encoder):
    client, library, media = served
    jpeg = (media / "img01.jpg").read_bytes()
    cases = [
        (("notes.txt", b"hello world", "text/plain"), 415, "neither an image"),
        (("fake.jpg", b"%PDF-1.7 not a jpeg", "image/jpeg"), 415, "neither an image"),
        (("empty.jpg", b"", "image/jpeg"), 400, "empty"),
        (("cut.jpg", jpeg[:120], "image/jpeg"), 400, "upload cut.jpg: corrupt or truncated image"),
    ]
    for file, code, message in cases:
        response = client.post("/api/search/file", files={"file": file})
        assert response.status_code == code and message in response.json()["detail"], file[0]
    missing = client.post("/api/search/file")
    assert missing.status_code == 422 and missing.json()["detail"] == "file: Field required"

    small = make_client(library, tiny_encoder, max_upload_bytes=len(jpeg) - 1)
    too_big = small.post("/api/search/file", files={"file": ("big.jpg", jpeg, "image/jpeg")})
    assert too_big.status_code == 413 and "larger than" in too_big.json()["detail"]
    huge = small.post("/api/search/file", files={"file": ("huge.jpg", jpeg * 200, "image/jpeg")})
    assert huge.status_code == 413 and "request body too large" in huge.json()["detail"]
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.jpg"\r\n\r\n'
    chunked = small.post("/api/search/file", content=iter([head] + [b"x" * 40_000] * 4),  # no Content-Length
                         headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert chunked.status_code == 413 and "request body too large" in chunked.json()["detail"]


# -- items, thumbnails, media -----------------------------------------------------------------

def test_item_metadata(served):
    client, library, media = served
    iid = item_id(library, media / "rotated.jpg")
    body = client.get(f"/api/items/{iid}").json()
    assert body["path"] == str(media / "rotated.jpg") and body["kind"] == "image" and body["status"] == "indexed"
    assert body["height"] > body["width"]  # stored upright
    assert body["size"] == (media / "rotated.jpg").stat().st_size
    assert body["thumbnail"] and body["media"] == f"/api/items/{iid}/media"
    assert client.get("/api/items/999999").status_code == 404
    assert client.get("/api/items/abc").status_code == 422


def test_thumbnail_is_upright_small_and_cached(served):
    client, library, media = served
    iid = item_id(library, media / "rotated.jpg")
    response = client.get(f"/api/items/{iid}/thumbnail", params={"size": 128})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.size == (64, 128)  # EXIF orientation applied: portrait, and within 128 px
    cached = list((library.root / "thumbnails").rglob("*-128.jpg"))
    assert len(cached) == 1
    made = cached[0].stat().st_mtime_ns
    assert client.get(f"/api/items/{iid}/thumbnail", params={"size": 128}).content == response.content
    assert cached[0].stat().st_mtime_ns == made  # served from the cache, not made again


def test_thumbnail_refusals(served):
    client, library, media = served
    iid = item_id(library, media / "img01.jpg")
    assert client.get(f"/api/items/{iid}/thumbnail", params={"size": 300}).status_code == 422
    assert client.get(f"/api/items/{iid}/thumbnail", params={"t": -1}).status_code == 422
    text = client.get(f"/api/items/{item_id(library, media / 'captions.txt')}/thumbnail")
    assert text.status_code == 404 and "only images and videos" in text.json()["detail"]
    assert client.get("/api/items/999999/thumbnail").status_code == 404


def test_media_whole_and_ranges(served):
    client, library, media = served
    path = media / "clip.mp4"
    data, iid = path.read_bytes(), item_id(library, path)
    whole = client.get(f"/api/items/{iid}/media")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    part = client.get(f"/api/items/{iid}/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"/api/items/{iid}/media", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    open_ended = client.get(f"/api/items/{iid}/media", headers={"Range": f"bytes={len(data) - 10}-"})
    assert open_ended.content == data[-10:]
    outside = client.get(f"/api/items/{iid}/media", headers={"Range": f"bytes={len(data)}-"})
    assert outside.status_code == 416 and outside.headers["content-range"] == f"bytes */{len(data)}"
    for ignored in ("bytes=abc", "items=0-10", "bytes=0-1,5-6", "bytes=9-3"):
        response = client.get(f"/api/items/{iid}/media", headers={"Range": ignored})
        assert response.status_code == 200 and response.content == data, ignored


# -- only library files, only as indexed -----------------------------------------------------

@pytest.fixture
def small(tmp_path, tiny_encoder):
    library, media = build_library(tmp_path, tiny_encoder, n_images=3)
    return make_client(library, tiny_encoder), library, media


def test_a_file_swapped_for_a_symlink_is_not_served(small, tmp_path):
    client, library, media = small
    target = media / "img01.jpg"
    iid = item_id(library, target)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"private " * 100)
    target.unlink()
    target.symlink_to(secret)
    for url in (f"/api/items/{iid}/media", f"/api/items/{iid}/thumbnail"):
        response = client.get(url)
        assert response.status_code == 404 and "outside the indexed folders" in response.json()["detail"]
        assert b"private" not in response.content


def test_a_symlinked_item_is_served_from_its_target(tmp_path, tiny_encoder):
    real = make_image(tmp_path / "media" / "elsewhere" / "real.jpg", seed=7)  # inside the roots
    (tmp_path / "media" / "link.jpg").symlink_to(real)
    library = Library.open(tmp_path / "lib", create=True)
    run_index(library, tiny_encoder, [tmp_path / "media"])
    client = make_client(library, tiny_encoder)
    response = client.get(f"/api/items/{item_id(library, tmp_path / 'media' / 'link.jpg')}/media")
    assert response.status_code == 200 and response.content == real.read_bytes()


def test_changed_deleted_and_special_files_are_refused(small):
    client, library, media = small
    changed, deleted = media / "img01.jpg", media / "img02.jpg"
    changed_id, deleted_id = item_id(library, changed), item_id(library, deleted)
    changed.write_bytes(changed.read_bytes() + b"more")
    deleted.unlink()
    assert client.get(f"/api/items/{changed_id}/media").status_code == 409
    gone = client.get(f"/api/items/{deleted_id}/media")
    assert gone.status_code == 404 and "no longer on disk" in gone.json()["detail"]
    fifo_id = item_id(library, media / "img00.jpg" if (media / "img00.jpg").exists() else media / "sub" / "img00.jpg")
    fifo = Path(client.get(f"/api/items/{fifo_id}").json()["path"])
    fifo.unlink()
    os.mkfifo(fifo)  # opening it must not hang, and it is not the regular file that was indexed
    assert client.get(f"/api/items/{fifo_id}/media").status_code in (403, 409)


def test_no_client_given_path_reaches_the_disk(served):
    client, _, _ = served
    for url in ("/api/items/..%2F..%2Fetc%2Fpasswd/media", "/api/items/%2Fetc%2Fpasswd",
                "/static/%2e%2e/%2e%2e/etc/passwd",
                "/static/..%2F..%2F..%2Fetc%2Fpasswd", "/api/items/1/media/../../../../etc/passwd"):
        response = client.get(url)
        assert response.status_code in (404, 422), url
        assert b"root:" not in response.content


# -- status, page, errors ----------------------------------------------------------------------

def test_status_page_and_docs(served):
    client, _, _ = served
    info = client.get("/api/status").json()
    assert info["model"] == "tiny-test" and info["indexes"]["image"]["vectors"] == 13
    assert info["server"]["model"] == "tiny-test" and info["server"]["token_required"] is False
    assert info["server"]["text_encoder"] == "numpy text tower"  # shared in the model cache by the torch load
    page = client.get("/")
    assert page.status_code == 200 and '<ol id="results"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert "/api/search/file" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_unexpected_errors_are_500_without_a_traceback(served, tiny_encoder, tmp_path, monkeypatch):
    _, library, _ = served
    monkeypatch.setenv("JRSEARCH_CACHE", str(tmp_path / "no-exports"))  # text goes through the engine

    class Broken(SearchEngine):
        def embed_text(self, text: str) -> np.ndarray:
            raise RuntimeError("secret internals")

    client = make_client(library, tiny_encoder, engine=Broken(library, encoder=tiny_encoder), warm=False)
    response = client.get("/api/search", params={"q": "x"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the server log has the details"}


# -- token and host ----------------------------------------------------------------------------

def test_token_is_required_everywhere_but_the_page(served, tiny_encoder):
    _, library, _ = served
    client = make_client(library, tiny_encoder, token=TOKEN)
    for url in ("/api/search?q=x", "/api/status", "/api/items/1", "/api/items/1/media", "/docs", "/openapi.json"):
        response = client.get(url)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", url
    assert client.get("/").status_code == 200 and client.get("/static/style.css").status_code == 200
    assert client.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/api/status", params={"token": TOKEN[:-1]}).status_code == 401


def test_login_sets_a_cookie_the_page_then_uses(served, tiny_encoder):
    _, library, _ = served
    client = make_client(library, tiny_encoder, token=TOKEN)
    assert client.post("/api/login", json={"token": "nope"}).status_code == 401
    assert client.post("/api/login", json={}).status_code == 422
    login = client.post("/api/login", json={"token": TOKEN})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/search", params={"q": "x"}).status_code == 200  # the cookie jar carries it


def test_token_in_the_url_works_once_and_becomes_a_cookie(served, tiny_encoder):
    _, library, _ = served
    client = make_client(library, tiny_encoder, token=TOKEN)
    assert "set-cookie" not in client.get("/", params={"token": "wrong"}).headers
    assert client.get("/api/status").status_code == 401
    page = client.get("/", params={"token": TOKEN})  # a link to the page that carries the token
    assert page.status_code == 200 and "token=" in page.headers["set-cookie"]
    assert client.get("/api/status").status_code == 200


def test_loopback_server_answers_loopback_host_names_only(served, tiny_encoder):
    from jrsearch.cli.web.security import LOOPBACK_NAMES

    _, library, _ = served
    client = make_client(library, tiny_encoder, allowed_hosts=LOOPBACK_NAMES)
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200, host
    rebound = client.get("/api/status", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 403 and "loopback" in rebound.json()["detail"]


def test_serve_refuses_other_hosts_without_a_token(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from jrsearch.cli.main import app
    from jrsearch.cli.web.security import is_loopback

    monkeypatch.delenv("JRSEARCH_TOKEN", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--library", str(tmp_path)])
    assert result.exit_code == 1 and "--token-file" in result.stderr
    short = tmp_path / "token"
    short.write_text("abc\n")
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--token-file", str(short), "--library", str(tmp_path)])
    assert result.exit_code == 1 and "at least 16" in result.stderr
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.3.4.5", "0.0.0.0", "192.168.1.2",
                                     "example.com")] == [True, True, True, True, True, False, False, False]


def test_serve_builds_the_app_it_promises(served, tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from jrsearch.cli.main import app

    _, library, _ = served
    started: list[tuple] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: started.append(
        (TestClient(server.config.app), server.config.host, server.config.port)))  # serve's own socket, bound
    monkeypatch.delenv("JRSEARCH_TOKEN", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)  # serve sets it; put it back afterwards
    result = CliRunner().invoke(app, ["serve", "--library", str(library.root), "--port", "8123"])
    assert result.exit_code == 0, result.output
    client, host, port = started[0]
    assert (host, port) == ("127.0.0.1", 8123) and "http://127.0.0.1:8123" in result.stderr
    assert client.get("/api/status", headers={"Host": "localhost:8123"}).status_code == 200
    assert client.get("/api/status", headers={"Host": "example.com"}).status_code == 403  # loopback names only

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    result = CliRunner().invoke(app, ["serve", "--library", str(library.root), "--host", "0.0.0.0", "--port", "0",
                                      "--token-file", str(token_file)])
    assert result.exit_code == 0, result.output
    client, host, _ = started[1]
    assert host == "0.0.0.0" and "token required" in result.stderr
    assert client.get("/api/status", headers={"Host": "192.168.1.5"}).status_code == 401
    authorised = client.get("/api/status", headers={"Host": "192.168.1.5", "Authorization": f"Bearer {TOKEN}"})
    assert authorised.status_code == 200 and authorised.json()["server"]["token_required"] is True


# -- fresh while indexing --------------------------------------------------------------------

def test_new_commits_are_seen_and_concurrent_requests_stay_correct(small, tiny_encoder):
    client, library, media = small
    before = len(client.get("/api/search", params={"q": "x", "top_k": 200}).json()["results"])
    for i in range(20, 60):
        make_image(media / "new" / f"new{i}.jpg", seed=i)
    writer = Library.open(library.root)  # another process's view of the same library
    codes: list[int] = []
    done = threading.Event()

    def index() -> None:
        try:
            with writer.writing():
                from jrsearch.indexer.pipeline import IndexOptions

                run_index(writer, tiny_encoder, [media], IndexOptions(batch_size=8))
        finally:
            done.set()

    def ask(_: int) -> int:
        return client.get("/api/search", params={"q": "a photo", "top_k": 5}).status_code

    with ThreadPoolExecutor(4) as pool:
        indexing = pool.submit(index)
        while not done.is_set():
            codes.extend(pool.map(ask, range(3)))
        indexing.result()
    assert codes and set(codes) == {200}
    after = client.get("/api/search", params={"q": "x", "top_k": 200}).json()["results"]
    assert len(after) == before + 40


def test_a_slow_index_load_is_not_repeated_for_every_commit(small, tiny_encoder):
    from jrsearch.retrieval.request import SearchRequest
    from jrsearch.retrieval.service import LibraryService

    _, library, media = small
    service = LibraryService(library, SearchEngine(library, encoder=tiny_encoder))
    service.slow_reload_s, service.reload_share = 0.0, 1e-9  # every load counts as slow: wait ~forever
    vector = tiny_encoder.encode_texts(["x"])[0]
    request = SearchRequest(MediaKind.IMAGE, 50)
    assert len(service.search(vector, request)) == 4
    make_image(media / "later.jpg", seed=99)
    run_index(Library.open(library.root), tiny_encoder, [media])
    assert len(service.search(vector, request)) == 4  # within the wait: not reloaded
    service._next_refresh = 0.0  # the wait is over
    assert len(service.search(vector, request)) == 5


def test_library_refresh_drops_only_changed_indexes(small, tiny_encoder):
    _, library, media = small
    reader = Library.open(library.root)
    reader.index("image"), reader.index("text")
    reader.refresh()
    reader.index("image"), reader.index("text")
    assert reader.refresh() == []
    make_image(media / "later.jpg", seed=99)
    run_index(Library.open(library.root), tiny_encoder, [media])
    assert reader.refresh() == ["image"]
    assert reader.index("image").ntotal == 5


# -- hostile requests: ids, Host headers, uploads, swapped files --------------------------------

@pytest.mark.parametrize("raw", ["9223372036854775808", "18446744073709551616", str(10**30), "-1", "0",
                                 "-9223372036854775809", "1.5", "1e3", "abc", "0x10"])
def test_out_of_range_and_malformed_ids_are_refused_not_500(served, raw):
    client, _, _ = served
    for tail in ("", "/thumbnail", "/media"):
        response = client.get(f"/api/items/{raw}{tail}")
        assert response.status_code in (404, 422), (raw, tail, response.text)
        assert "item_id" in response.json()["detail"] or "no item" in response.json()["detail"]


def test_the_largest_id_sqlite_holds_is_a_plain_404(served):
    client, _, _ = served
    for tail in ("", "/thumbnail", "/media"):
        response = client.get(f"/api/items/{2**63 - 1}{tail}")
        assert response.status_code == 404 and "no item" in response.json()["detail"]


@pytest.mark.parametrize("host, code", [
    ("127.0.0.1:8765", 200), ("[::1]:8765", 200), ("[::1]", 200), ("[0:0::1]:80", 200), ("LOCALHOST.:8000", 200),
    ("127.0.0.1:8765@evil.com", 400), ("localhost@evil.com", 400), ("user:pw@localhost:8000", 400),
    ("127.0.0.1:8000/evil", 400), ("localhost:abc", 400), ("localhost:99999", 400), ("[::1", 400), ("::1", 400),
    ("[127.0.0.1]", 400), ("local host", 400), ("localhost:", 400), ("", 400),
    ("evil.com", 403), ("127.0.0.1.evil.com:80", 403), ("[::2]:8765", 403), ("localhost.evil.com", 403),
])
def test_host_header_is_parsed_like_a_web_server_does(served, tiny_encoder, host, code):
    from jrsearch.cli.web.security import LOOPBACK_NAMES

    _, library, _ = served
    client = make_client(library, tiny_encoder, allowed_hosts=LOOPBACK_NAMES, warm=False)
    response = client.get("/api/status", headers={"Host": host})
    assert response.status_code == code, host
    if code == 400:
        assert response.json()["detail"].startswith("malformed Host header")


def test_a_bad_audio_upload_names_the_upload_not_a_server_path(served, tiny_encoder):
    _, library, _ = served

    from jrsearch.retrieval.encoders.audio import AudioEncoder, AudioTowerInfo
    from jrsearch.retrieval.towers import LibraryTowers

    class FakeTower(AudioEncoder):  # the real AudioEncoder.embed_query runs: read_audio fails on the bytes first
        def __init__(self) -> None:
            self.info = AudioTowerInfo("t.pt", "jrsearch", tiny_encoder.spec, tiny_encoder.dim, 16000, 1.0)

        def embed_clip(self, samples):
            raise AssertionError("not reached")

    class FakeTowers(LibraryTowers):
        def modalities(self) -> tuple[str, ...]:
            return ("text", "image", "audio")

        def get(self, modality: str):
            return FakeTower()

    engine = SearchEngine(library, encoder=tiny_encoder)
    engine.towers = FakeTowers(library, lambda: tiny_encoder)
    client = make_client(library, tiny_encoder, engine=engine, warm=False)
    for name, data in (("my recording.wav", WAV), ("cut.flac", b"fLaC" + bytes(40))):
        response = client.post("/api/search/file", files={"file": (name, data, "audio/wav")})
        detail = response.json()["detail"]
        assert response.status_code == 400 and f"upload {name}" in detail, detail
        assert "jrsearch-upload" not in detail and "query." not in detail and os.sep + "tmp" not in detail, detail


def test_a_file_swapped_for_a_look_alike_with_the_same_size_and_mtime_is_not_served(small, tmp_path):
    client, library, media = small
    target = media / "img01.jpg"
    iid = item_id(library, target)
    original = target.stat()
    assert client.get(f"/api/items/{iid}/media").status_code == 200  # verified once, then remembered
    secret = media / "private" / "secret.bin"  # inside the roots: the content hash is what refuses it
    secret.parent.mkdir()
    secret.write_bytes(b"private!" * (original.st_size // 8) + b"p" * (original.st_size % 8))
    os.utime(secret, ns=(original.st_atime_ns, original.st_mtime_ns))
    target.unlink()
    target.symlink_to(secret)
    assert target.stat().st_size == original.st_size and target.stat().st_mtime_ns == original.st_mtime_ns
    for url in (f"/api/items/{iid}/media", f"/api/items/{iid}/thumbnail?size=512"):
        response = client.get(url)
        assert response.status_code == 409 and "changed on disk" in response.json()["detail"], url
        assert b"private" not in response.content


def test_serve_says_what_it_rebuilt_from_a_damaged_index_file(served, tmp_path, monkeypatch):
    """Issue 22: a damaged image index is rebuilt from the shards while `serve` warms; it says so in
    one `note:` on stderr (it used to rebuild it silently)."""
    import shutil

    import uvicorn
    from typer.testing import CliRunner

    from jrsearch.cli.main import app
    from jrsearch.retrieval.paths import index_path

    _, library, _ = served
    copy = tmp_path / "lib"
    shutil.copytree(library.root, copy)
    damaged = index_path(copy, MediaKind.IMAGE)
    damaged.write_bytes(b"\0" * damaged.stat().st_size)
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: None)
    monkeypatch.delenv("JRSEARCH_TOKEN", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    result = CliRunner().invoke(app, ["serve", "--library", str(copy), "--port", "0"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and f"{damaged} is damaged" in notes[0]
