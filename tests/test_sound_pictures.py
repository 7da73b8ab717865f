"""Sounds you can see: a sound result's thumbnail is the spectrogram of its matched time range."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import item_id, make_client, make_image, make_sound, tone


@pytest.fixture(scope="module")
def sound_client(tmp_path_factory, tiny_encoder):
    """A library with one photo (indexed) and two sounds stored with 2-second segments: `steps.wav`
    (440 Hz, then 2 kHz) and `noise.wav` (white noise)."""
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library, SoundRecord
    from jrsearch.retrieval.types import ItemStatus

    root = tmp_path_factory.mktemp("sounds")
    make_image(root / "media" / "photo.png", seed=1)
    library = Library.open(root / "lib", create=True)
    run_index(library, tiny_encoder, [root / "media"])
    steps = make_sound(root / "steps.wav", np.concatenate([tone(440, 2.0), tone(2000, 2.0)]))
    noise = make_sound(root / "noise.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 64000).astype(np.float32))
    rng = np.random.default_rng(1)
    for path in (steps, noise):
        vectors = rng.normal(size=(2, tiny_encoder.dim)).astype(np.float32)
        stat = path.stat()
        library.write([SoundRecord(path=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns, content_hash=None,
                                   status=ItemStatus.INDEXED, duration_s=4.0,
                                   vectors=vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                                   segments=[(0.0, 2.0), (2.0, 4.0)])])
    library.save_indexes()
    return make_client(library, tiny_encoder), library, steps, noise


def pixels(response) -> np.ndarray:
    from PIL import Image

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.float32)


def test_a_sound_thumbnail_shows_its_time_range(sound_client):
    client, library, steps, noise = sound_client
    url = f"/api/items/{item_id(library, steps)}/thumbnail"
    low = pixels(client.get(url, params={"t": 0, "until": 2}))
    high = pixels(client.get(url, params={"t": 2, "until": 4}))
    hiss = pixels(client.get(f"/api/items/{item_id(library, noise)}/thumbnail", params={"t": 0, "until": 2}))
    assert low.shape == high.shape == (192, 256, 3)
    # a tone is one bright band: 440 Hz low in the picture, 2 kHz higher up; noise lights every row
    band = [int(np.argmax(p.mean(axis=(1, 2)))) for p in (low, high)]
    assert band[0] > band[1] + 10, band  # row 0 is the top: higher pitch, smaller row
    assert np.abs(low - high).mean() > 10 and np.abs(low - hiss).mean() > 10
    assert hiss.mean(axis=(1, 2)).min() > np.median(low.mean(axis=(1, 2))) + 40
    again = client.get(url, params={"t": 0, "until": 2})  # cached: the same bytes
    assert again.content == client.get(url, params={"t": 0, "until": 2}).content


def test_sound_results_link_their_range_s_picture(sound_client):
    client, library, steps, _ = sound_client
    results = client.get("/api/search", params={"q": "a tone", "kind": "audio", "top_k": 10}).json()["results"]
    assert results and all(r["kind"] == "audio" for r in results)
    for r in results:
        assert r["thumbnail"].startswith(f"/api/items/{r['item_id']}/thumbnail?size=256")
        assert f"until={r['end_s']:.1f}" in r["thumbnail"]
        assert client.get(r["thumbnail"]).status_code == 200
    assert client.get(f"/api/items/{item_id(library, steps)}/thumbnail",
                      params={"t": 30, "until": 32}).status_code == 415  # past the end: no sound there
