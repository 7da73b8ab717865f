"""Files are what their bytes say: a rotated phone video is stored and thumbnailed upright, a
sound-only .mp4 is a sound, a JPEG named .mp4 is an image; internal errors read as reasons."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import Scene, add_video, item_id, make_client, make_image, make_sound, make_video, tone
from PIL import Image

from jrsearch.indexer.pipeline import run_index
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.types import MediaKind


def write_rotated_video(path: Path, rotation: int, seconds: int = 2, fps: int = 8) -> Path:
    """A 64x32 stored video whose left half is white, with a display matrix turning it `rotation`
    degrees counter-clockwise (what a phone writes for a video shot upright)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        if not hasattr(stream, "set_display_rotation"):
            pytest.skip(f"PyAV {av.__version__} cannot write a display matrix (needs PyAV >= 15)")
        stream.set_display_rotation(rotation)
        frame = np.zeros((32, 64, 3), np.uint8)
        frame[:, :32] = 255
        for _ in range(seconds * fps):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def white_half(image) -> str:
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    h, w = grey.shape
    halves = {"top": grey[: h // 2].mean(), "bottom": grey[h // 2:].mean(), "left": grey[:, : w // 2].mean(),
              "right": grey[:, w // 2:].mean()}
    return max(halves, key=halves.get)


# a turn of +90 (counter-clockwise) brings the stored left edge to the bottom; -90 brings it to the top
ROTATIONS = [(90, "bottom"), (-90, "top"), (180, "right"), (0, "left")]


@pytest.mark.parametrize("rotation, white", ROTATIONS)
def test_video_frames_are_sampled_upright(tmp_path, rotation, white):
    import av

    from jrsearch.indexer.video import iter_frames

    path = write_rotated_video(tmp_path / "phone.mp4", rotation)
    with av.open(str(path)) as container:
        samples = list(iter_frames(container, fps=1.0))
    assert samples
    portrait = rotation % 180 != 0
    for sample in samples:
        assert sample.image.size == ((32, 64) if portrait else (64, 32))
        assert white_half(sample.image) == white
        assert sample.quarter_turned == portrait


def test_a_rotated_video_is_stored_and_thumbnailed_upright(tmp_path, tiny_encoder):
    media = tmp_path / "media"
    media.mkdir()
    write_rotated_video(media / "portrait.mp4", 90)
    write_rotated_video(media / "landscape.mp4", 0)
    library = Library.open(tmp_path / "lib", create=True)
    report = run_index(library, tiny_encoder, [media])
    assert report.indexed == 2 and not report.failed
    client = make_client(library, tiny_encoder, warm=False)
    for name, size, white in (("portrait.mp4", (32, 64), "bottom"), ("landscape.mp4", (64, 32), "left")):
        iid = item_id(library, media / name)
        body = client.get(f"/api/items/{iid}").json()
        assert (body["width"], body["height"]) == size, name
        response = client.get(f"/api/items/{iid}/thumbnail", params={"size": 128, "t": 1.0})
        assert response.status_code == 200, response.text
        thumb = Image.open(io.BytesIO(response.content))
        assert (thumb.width < thumb.height) == (size[0] < size[1]) and white_half(thumb) == white, name


def test_files_are_classified_by_content_not_name(tmp_path):
    from jrsearch.indexer.walk import content_kind

    jpeg = make_image(tmp_path / "photo.mp4", seed=1, fmt="JPEG")
    png = make_image(tmp_path / "photo.wav", seed=2, fmt="PNG")
    sound_only = make_video(tmp_path / "voice.mp4", [Scene(1.0, 0, 500.0)], video_codec=None)
    video_named_mp3 = make_video(tmp_path / "clip.mp4", [Scene(1.0, 1, 500.0)], video_codec="mpeg4", audio_codec=None)
    video_named_mp3 = video_named_mp3.rename(tmp_path / "clip.mp3")
    wav = make_sound(tmp_path / "tone.mp4", tone(500.0, 0.5), fmt="wav")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    cases = {jpeg: MediaKind.IMAGE, png: MediaKind.IMAGE, sound_only: MediaKind.AUDIO, video_named_mp3: MediaKind.VIDEO,
             wav: MediaKind.AUDIO, junk: MediaKind.VIDEO}  # junk keeps its name's kind: it fails later, with a reason
    for path, kind in cases.items():
        named = MediaKind.AUDIO if path.suffix in (".wav", ".mp3") else MediaKind.VIDEO
        assert content_kind(path, named) == kind, path.name
    assert content_kind(tmp_path / "notes.txt", MediaKind.TEXT) == MediaKind.TEXT


def test_a_jpeg_named_mp4_is_indexed_and_served_as_an_image(tmp_path, tiny_encoder):
    from jrsearch.retrieval.engine import SearchEngine

    media = tmp_path / "media"
    fake = make_image(media / "holiday.mp4", seed=3, fmt="JPEG")
    make_image(media / "other.jpg", seed=4)
    library = Library.open(tmp_path / "lib", create=True)
    report = run_index(library, tiny_encoder, [media])
    assert report.indexed == 2 and not report.failed
    item = library.item_at(str(fake))
    assert item is not None
    assert (item.kind, item.width, item.height) == ("image", 96, 64)
    engine = SearchEngine(library, encoder=tiny_encoder)
    assert engine.search(engine.embed("image", fake), kind=MediaKind.IMAGE, top_k=1)[0].path == str(fake)
    assert not engine.search(engine.embed("image", fake), kind=MediaKind.VIDEO, top_k=5)
    client = make_client(library, tiny_encoder, engine=engine, warm=False)
    media_response = client.get(f"/api/items/{item_id(library, fake)}/media")
    assert media_response.status_code == 200 and media_response.headers["content-type"] == "image/jpeg"
    assert client.get(f"/api/items/{item_id(library, fake)}/thumbnail").status_code == 200


def test_a_sound_only_file_stored_as_a_video_gets_a_clear_404_thumbnail(tmp_path, tiny_encoder):
    path = make_video(tmp_path / "voice.mp4", [Scene(1.0, 0, 500.0)], video_codec=None)
    library = Library.open(tmp_path / "lib", create=True)
    library.adopt_model(tiny_encoder.spec, tiny_encoder.dim)
    add_video(library, path, tiny_encoder.dim)  # as an older jrsearch stored it: kind video
    client = make_client(library, tiny_encoder, warm=False)
    response = client.get(f"/api/items/{item_id(library, path)}/thumbnail")
    detail = response.json()["detail"]
    assert response.status_code == 404 and "sound only" in detail, detail
    assert "index out of range" not in detail and "tuple" not in detail


def test_every_kind_has_a_handler_whose_extensions_name_it():
    from jrsearch.indexer.kinds import KIND_HANDLERS
    from jrsearch.indexer.walk import classify

    assert set(KIND_HANDLERS) == set(MediaKind)
    for kind, handler in KIND_HANDLERS.items():
        assert handler.info.name == kind and handler.info.extensions
        for suffix in handler.info.extensions:
            assert classify(Path(f"file{suffix}"), explicit=True) == kind, (kind, suffix)
