"""More like this, combined queries, image URLs and terminal previews (issue 24, part A): the CLI,
the Python API and the request records."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from helpers import add_video, jrsearch, make_image, write_video

import jrsearch as api
from jrsearch.retrieval.combine import combined_vector
from jrsearch.retrieval.errors import QueryError
from jrsearch.retrieval.request import Like, QueryTerm, SearchRequest, parse_term


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Six images, three captions and a video (two stored segments: 0-2 s, 2-4 s), tiny-test model."""
    from jrsearch.retrieval.library import Library

    base = tmp_path_factory.mktemp("like")
    for i in range(6):
        make_image(base / "photos" / f"img{i}.jpg", seed=i)
    (base / "caps.txt").write_text("a dog on a beach\na red car\nblue sky over the sea\n")
    jrsearch("index", str(base / "photos"), str(base / "caps.txt"), "--model", "tiny-test", lib=base / "lib")
    library = Library.open(base / "lib")
    model = library.model()
    assert model is not None
    add_video(library, write_video(base / "clip.mp4"), model.dim)
    library.close()
    return base


def query(base: Path, *args: str, ok: bool = True) -> list[dict]:
    return json.loads(jrsearch("query", *args, "--json", lib=base / "lib", ok=ok).stdout)


def test_like_an_indexed_image_finds_it_first_in_its_image_query_order(base):
    target = str(base / "photos" / "img3.jpg")
    liked = query(base, "--like", target)
    by_image = query(base, "--image", target)
    assert liked[0]["path"] == target and liked[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert [r["path"] for r in liked] == [r["path"] for r in by_image]
    assert [r["score"] for r in liked] == pytest.approx([r["score"] for r in by_image], abs=2e-3)


def test_like_a_video_moment_is_the_vector_covering_it(base):
    video = str(base / "clip.mp4")
    for at, segment in (("0.5", [0.0, 2.0]), ("2.5", [2.0, 4.0]), ("4", [2.0, 4.0])):
        top = query(base, "--like", f"{video}@{at}", "--kind", "video", "-k", "1")[0]
        assert [top["start_s"], top["end_s"]] == segment and top["score"] == pytest.approx(1.0, abs=1e-3)
    missed = jrsearch("query", "--like", f"{video}@9", lib=base / "lib", ok=False)
    assert missed.exit_code == 1 and "no vector at 9 s" in missed.output and "0-4 s" in missed.output


def test_like_a_caption_line_through_the_python_api(base):
    service = api.open(base / "lib")
    try:
        like = QueryTerm(Like(str(base / "caps.txt"), line=2))
        found = service.search(None, SearchRequest("text", 3, terms=(like,)))
    finally:
        service.close()
    assert found[0].text == "a red car" and found[0].score == pytest.approx(1.0, abs=1e-3)
    line3 = query(base, "--like", f"{base / 'caps.txt'}#3", "--kind", "text", "-k", "1")[0]
    assert line3["text"] == "blue sky over the sea" and line3["score"] == pytest.approx(1.0, abs=1e-3)


def test_like_a_path_not_indexed_is_one_line_suggesting_image(base, tmp_path):
    stray = make_image(tmp_path / "stray.jpg", seed=99)
    result = jrsearch("query", "--like", str(stray), lib=base / "lib", ok=False)
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "is not indexed" in result.output and f"--image {stray}" in result.output


def test_combined_vector_is_the_normalised_weighted_sum(base):
    service = api.open(base / "lib")
    try:
        image = base / "photos" / "img1.jpg"
        terms = (parse_term(f"2:{image}"), parse_term("0.5:a red car", subtract=True),
                 parse_term(f"like:{base / 'photos' / 'img4.jpg'}"))
        assert [t.weight for t in terms] == [2.0, -0.5, 1.0] and terms[0].value == image
        main = service.embed("text", "a dog on a beach")
        parts = [(1.0, main), (2.0, service.embed("image", image)), (-0.5, service.embed("text", "a red car")),
                 (1.0, service.like(Like(str(base / "photos" / "img4.jpg"))))]
        by_hand = sum(w * v / np.linalg.norm(v) for w, v in parts)
        by_hand = by_hand / np.linalg.norm(by_hand)
        combined = combined_vector(main, terms, service.embed_term)
        np.testing.assert_allclose(combined, by_hand, atol=1e-5)
        request = SearchRequest(top_k=6, terms=terms)
        assert ([(r.path, round(r.score, 5)) for r in service.search(main, request)]
                == [(r.path, round(r.score, 5)) for r in service.search(by_hand, SearchRequest(top_k=6))])
        with pytest.raises(QueryError, match="cancel out"):
            combined_vector(main, (QueryTerm("a dog on a beach", -1.0),), service.embed_term)
    finally:
        service.close()


def test_a_subtracted_term_pushes_its_nearest_item_down(base):
    target = str(base / "photos" / "img2.jpg")
    before = query(base, "a dog on a beach", "-k", "6")
    nearest = before[0]["path"]
    after = query(base, "a dog on a beach", "--subtract", f"like:{nearest}", "-k", "6")
    rank = [r["path"] for r in after].index(nearest)
    assert rank > 0 and after[rank]["score"] < before[0]["score"]
    # --add alone (no main query), with rclip's weight prefix
    added = query(base, "--add", f"like:{target}", "--add", "0.1:a red car", "-k", "1")
    assert added[0]["path"] == target


def test_a_bad_term_is_a_usage_error(base):
    result = jrsearch("query", "cat", "--add", "like:", lib=base / "lib", ok=False)
    assert result.exit_code == 2 and "like" in result.output
    result = jrsearch("query", "cat", "--like", str(base / "photos" / "img0.jpg"), lib=base / "lib", ok=False)
    assert result.exit_code == 1 and "give one of" in result.output


# -- image URLs -------------------------------------------------------------------------------


class _Answers(BaseHTTPRequestHandler):
    """/good.jpg: an image; /text: HTML; /big: declared over the limit; /stream: over it without a
    declared length; /slow: no answer for 3 s."""

    image = b""

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(3)
        if self.path == "/to-private":  # a redirect to another loopback address
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.2:{self.server.server_address[1]}/good.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, declared = {"/good.jpg": (self.image, True), "/text": (b"<html>not an image</html>", True),
                          "/big": (b"\xff\xd8\xff" + bytes(64), False), "/stream": (b"\xff\xd8\xff" * 20000, False),
                          "/slow": (self.image, True)}.get(self.path, (b"", True))
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body) if declared else 10**9 if self.path == "/big" else ""))
        if self.path == "/stream":
            self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (/big, /stream)
            self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server(base):
    _Answers.image = (base / "photos" / "img5.jpg").read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_an_image_url_searches_as_the_file_does(base, server):
    by_url = query(base, "--image", f"{server}/good.jpg")
    by_file = query(base, "--image", str(base / "photos" / "img5.jpg"))
    assert [r["path"] for r in by_url] == [r["path"] for r in by_file]
    added = query(base, "--add", f"{server}/good.jpg", "-k", "1")
    assert added[0]["path"] == str(base / "photos" / "img5.jpg")


def test_a_url_that_is_not_an_image_is_one_line_naming_it(base, server):
    for path in ("/text", "/missing"):
        result = jrsearch("query", "--image", f"{server}{path}", lib=base / "lib", ok=False)
        assert result.exit_code == 1 and result.output.count("\n") == 1
        assert f"image URL {server}{path}:" in result.output
    assert "not an image" in jrsearch("query", "--image", f"{server}/text", lib=base / "lib", ok=False).output


def test_oversize_and_slow_answers_are_refused(server):
    from jrsearch.retrieval.image_url import ImageUrlError, fetch_image

    assert fetch_image(f"{server}/good.jpg")[1].kind == "image"
    with pytest.raises(ImageUrlError, match="over the limit of 1000"):
        fetch_image(f"{server}/big", max_bytes=1000)
    with pytest.raises(ImageUrlError, match="over the limit"):
        fetch_image(f"{server}/stream", max_bytes=1000)
    started = time.monotonic()
    with pytest.raises(ImageUrlError, match=r"within 0.3 s|longer than 0.3 s"):
        fetch_image(f"{server}/slow", timeout_s=0.3)
    assert time.monotonic() - started < 2
    with pytest.raises(ImageUrlError, match="only http"):
        fetch_image("file:///etc/passwd")


def test_serve_follows_no_redirect_to_a_private_host(server, monkeypatch):
    from jrsearch.retrieval import image_url

    monkeypatch.setattr(image_url, "_is_public", lambda address: address == "127.0.0.1")  # the test server
    with image_url.public_hosts_only():  # as `serve` runs a request's search
        assert image_url.fetch_image(f"{server}/good.jpg")[1].kind == "image"
        with pytest.raises(image_url.ImageUrlError, match=r"127\.0\.0\.2 is a private or local address"):
            image_url.fetch_image(f"{server}/to-private")
    with pytest.raises(image_url.ImageUrlError, match="cannot fetch it"):  # the CLI follows it (nothing listens)
        image_url.fetch_image(f"{server}/to-private")


def test_serve_connects_to_the_address_it_checked_with_no_second_lookup(server, monkeypatch):
    """DNS rebinding: a name that answers the check with a public address and the fetch with a private one."""
    import socket

    from jrsearch.retrieval import image_url

    port = server.rsplit(":", 1)[1]
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"])  # the test server, public for this test; every later answer is private
    asked: list[str] = []

    def rebinding(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "rebind.test":
            return real(host, *args, **kwargs)
        asked.append(host)
        return real(next(answers, "127.0.0.2"), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(image_url, "_is_public", lambda address: address == "127.0.0.1")
    with image_url.public_hosts_only():
        assert image_url.fetch_image(f"http://rebind.test:{port}/good.jpg")[1].kind == "image"
        assert asked == ["rebind.test"]  # resolved once: the connection went where the check looked
        private = r"rebind\.test is a private or local address \(127\.0\.0\.2\)"
        with pytest.raises(image_url.ImageUrlError, match=private):
            image_url.fetch_image(f"http://rebind.test:{port}/good.jpg")


# -- previews ---------------------------------------------------------------------------------


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(out, format="PNG")
    return out.getvalue()


def test_preview_escape_sequences_for_each_protocol():
    import base64

    from jrsearch.cli.preview import ITERM2, KITTY, image_escape

    png = _png()
    data = base64.standard_b64encode(png).decode()
    assert image_escape(png, KITTY) == f"\x1b_Ga=T,f=100,m=0;{data}\x1b\\"
    assert image_escape(png, ITERM2) == f"\x1b]1337;File=inline=1;size={len(png)};preserveAspectRatio=1:{data}\x07"
    big = bytes(range(256)) * 40  # 10240 bytes: 13656 base64 characters, four chunks
    escapes = image_escape(big, KITTY).split("\x1b\\")[:-1]
    assert [e[:len("\x1b_Ga=T,f=100,m=1;")] for e in escapes[:1]] == ["\x1b_Ga=T,f=100,m=1;"]
    assert [e.split(";")[0] for e in escapes[1:]] == ["\x1b_Gm=1", "\x1b_Gm=1", "\x1b_Gm=0"]
    assert base64.standard_b64decode("".join(e.split(";", 1)[1] for e in escapes)) == big


@pytest.mark.parametrize(("env", "protocol"), [({"KITTY_WINDOW_ID": "1"}, "kitty"), ({"TERM": "xterm-kitty"}, "kitty"),
                                               ({"TERM_PROGRAM": "iTerm.app"}, "iterm2"),
                                               ({"LC_TERMINAL": "iTerm2"}, "iterm2"), ({"TERM": "xterm"}, None)])
def test_the_terminal_is_told_by_its_environment(monkeypatch, env, protocol):
    from jrsearch.cli.preview import terminal_protocol

    for name in ("TERM", "TERM_PROGRAM", "KITTY_WINDOW_ID", "LC_TERMINAL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert terminal_protocol() == protocol


def test_query_preview_shows_thumbnails_or_says_it_cannot(base, monkeypatch):
    from jrsearch.cli.preview import CANNOT

    for name in ("TERM", "TERM_PROGRAM", "KITTY_WINDOW_ID", "LC_TERMINAL"):
        monkeypatch.delenv(name, raising=False)
    plain = jrsearch("query", "a dog", "--preview", "-k", "2", lib=base / "lib")
    assert CANNOT in plain.stderr and "\x1b" not in plain.stdout and "img" in plain.stdout
    monkeypatch.setenv("KITTY_WINDOW_ID", "3")
    shown = jrsearch("query", "a dog", "--preview", "-k", "2", lib=base / "lib").stdout
    assert shown.count("\x1b_Ga=T,f=100") == 2 and "#1 " in shown


# -- the HTTP API -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(base):
    from helpers import make_client

    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.library import Library

    library = Library.open(base / "lib")
    yield make_client(library, None, engine=SearchEngine(library), warm=False)
    library.close()


def test_api_like_an_item_and_a_video_moment(base, client):
    from helpers import item_id

    from jrsearch.retrieval.library import Library

    library = Library.open(base / "lib")
    image, video = item_id(library, base / "photos" / "img2.jpg"), item_id(library, base / "clip.mp4")
    library.close()
    body = client.get("/api/search", params={"like": image, "top_k": 3}).json()
    assert body["results"][0]["item_id"] == image and body["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert body["query"]["like"] == image
    moment = client.get("/api/search", params={"like": video, "like_at": 3, "kind": "video", "top_k": 1}).json()
    assert [moment["results"][0][k] for k in ("start_s", "end_s")] == [2.0, 4.0]
    missing = client.get("/api/search", params={"like": 99999})
    assert missing.status_code == 400 and "item 99999 is not in the library" in missing.json()["detail"]


def test_api_terms_as_params_or_body_are_one_query(base, client):
    from helpers import item_id

    from jrsearch.retrieval.library import Library

    library = Library.open(base / "lib")
    image = item_id(library, base / "photos" / "img4.jpg")
    library.close()
    params = {"q": "a dog on a beach", "add": [f"2:like:{image}", "a red car"], "subtract": ["0.5:sky"], "top_k": 6}
    by_params = client.get("/api/search", params=params).json()
    by_body = client.post("/api/search", params={"top_k": 6},
                          json={"q": "a dog on a beach", "add": params["add"], "subtract": params["subtract"]}).json()
    assert [r["item_id"] for r in by_params["results"]] == [r["item_id"] for r in by_body["results"]]
    assert by_params["results"][0]["item_id"] == image
    assert by_body["query"]["add"] == params["add"] and by_body["query"]["text"] == "a dog on a beach"
    plain = client.get("/api/search", params={"q": "a dog on a beach", "top_k": 6}).json()["results"]
    nearest = plain[0]["item_id"]
    pushed = client.get("/api/search", params={"q": "a dog on a beach", "subtract": f"like:{nearest}",
                                               "top_k": 6}).json()["results"]
    assert [r["item_id"] for r in pushed].index(nearest) > 0
    bad = client.get("/api/search", params={"q": "x", "add": "like:./a.jpg"})
    assert bad.status_code == 422 and "not an item id" in bad.json()["detail"]
    none = client.post("/api/search", json={"subtract": ["fruit"]})
    assert none.status_code == 422 and none.json()["detail"].startswith("q: Field required")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cat.jpg", "http://10.1.2.3/cat.jpg", "http://[::1]/cat.jpg",
                                 "http://169.254.169.254/latest/meta-data"])
def test_the_server_does_not_fetch_private_or_local_urls(client, url):
    """A URL term given to `serve` is fetched only from a public address: a page elsewhere cannot make
    the server reach its own machine's or its network's services (the CLI fetches any, as asked)."""
    refused = client.get("/api/search", params={"q": "a dog", "add": url})
    assert refused.status_code == 422
    assert "private or local address" in refused.json()["detail"] and url in refused.json()["detail"]
