"""Live folders: `index --watch` indexes what appears, changes and goes, and a served library sees it."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from helpers import make_client, make_image

BATCH_WAIT_S = 120  # the longest a batch may take on a loaded machine (the test waits for reports, not time)


def next_change(reports: queue.Queue):
    """The next batch's report that changed something (a write seen in two bursts may add a
    batch that finds nothing new)."""
    while True:
        report = reports.get(timeout=BATCH_WAIT_S)
        if report.indexed or report.removed or report.failed:
            return report


def test_roots_to_index_are_the_nearest_existing_folders(tmp_path):
    from jrsearch.indexer.watch import roots_to_index

    photos, captions = tmp_path / "photos", tmp_path / "captions.txt"
    (photos / "a" / "b").mkdir(parents=True)
    captions.write_text("a dog\n")
    roots = [photos, captions]
    assert roots_to_index([photos / "a" / "b" / "new.jpg", photos / "a" / "x.jpg"], roots) == [photos / "a"]
    assert roots_to_index([photos / "gone" / "deep" / "x.jpg"], roots) == [photos]  # a folder that went
    assert roots_to_index([captions, tmp_path / "elsewhere.jpg"], roots) == [captions]  # outside: ignored
    assert roots_to_index([photos / "a" / "b"], roots) == [photos / "a" / "b"]


def test_watch_keeps_a_served_library_current(tmp_path, tiny_encoder):
    from jrsearch.indexer.watch import watch
    from jrsearch.retrieval.library import Library

    media = tmp_path / "media"
    for i in range(3):
        make_image(media / f"img{i}.png", seed=i)
    make_image(media / "old.png", seed=50)
    (media / "sub").mkdir()
    writer = Library.open(tmp_path / "lib", create=True)
    reports: queue.Queue = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        with writer.writing():
            watch(writer, tiny_encoder, [media], on_batch=reports.put, stop=stop, debounce_s=0.3)

    watcher = threading.Thread(target=run, daemon=True)
    watcher.start()
    try:
        first = reports.get(timeout=BATCH_WAIT_S)
        assert first.indexed == 4 and not first.failed
        served = Library.open(tmp_path / "lib")  # another Library, as `jrsearch serve` has
        client = make_client(served, tiny_encoder)

        def paths() -> set[str]:
            body = client.get("/api/search", params={"q": "a photo", "top_k": 50}).json()
            return {Path(r["path"]).name for r in body["results"]}

        assert paths() == {"img0.png", "img1.png", "img2.png", "old.png"}

        make_image(media / "sub" / "new.png", seed=7)
        added = next_change(reports)
        assert (added.indexed, added.removed) == (1, 0)
        assert "new.png" in paths()

        before = served.item_at(str(media / "img1.png")).content_hash
        make_image(media / "img1.png", seed=99, size=(80, 60))  # new content in place
        changed = next_change(reports)
        assert changed.indexed == 1
        assert served.item_at(str(media / "img1.png")).content_hash != before
        upload = client.post("/api/search/file", files={"file": ("q.png", (media / "img1.png").read_bytes())},
                             params={"top_k": 1}).json()
        assert Path(upload["results"][0]["path"]).name == "img1.png" and upload["results"][0]["score"] > 0.999

        (media / "old.png").unlink()
        gone = next_change(reports)
        assert gone.removed == 1
        assert paths() == {"img0.png", "img1.png", "img2.png", "new.png"}
    finally:
        stop.set()
        watcher.join(timeout=BATCH_WAIT_S)
    assert not watcher.is_alive()
    while not reports.empty():  # the library's own writes are not events: nothing more was indexed
        assert not reports.get().indexed
