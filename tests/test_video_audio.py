"""Videos and sounds: frame sampling and time ranges, soundtracks, sound files, every bad-file case,
and audio queries against videos, sounds and images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import Scene, make_image, make_sound, make_video, picture, soundtrack, tone

from jrsearch.indexer.pipeline import IndexOptions, run_index
from jrsearch.retrieval.engine import SearchEngine
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.types import MediaKind, ModelSpec

SCENES = [Scene(3.0, 1, 440.0), Scene(3.0, 2, 1200.0)]


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: one thread per test process is fastest
    yield
    torch.set_num_threads(before)


TINY_SPEC = ModelSpec("tiny-test", "")


def make_tower(path: Path, image_model: ModelSpec = TINY_SPEC, dim: int = 64) -> Path:
    """An untrained (seeded) audio tower checkpoint: enough to exercise every sound path."""
    import torch

    from jrsearch.retrieval.encoders.audio import AudioTowerConfig, build_tower, save_tower

    torch.manual_seed(0)
    config = AudioTowerConfig(dim=dim)
    save_tower(path, build_tower(config), config, image_model)
    return path


@pytest.fixture(scope="module")
def tower(tmp_path_factory) -> Path:
    return make_tower(tmp_path_factory.mktemp("tower") / "tower.pt")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Good videos and sounds, and every kind of bad file."""
    root = tmp_path_factory.mktemp("media")
    make_video(root / "videos" / "scenes.mp4", SCENES)
    make_video(root / "videos" / "vfr.mp4", [Scene(2.0, 3, 300.0), Scene(2.0, 4, 2000.0)], vfr=True)
    make_video(root / "videos" / "odd.avi", [Scene(2.0, 5, 600.0)], video_codec="mpeg4", audio_codec="mp3")
    make_video(root / "videos" / "silent.mp4", [Scene(2.0, 6, 0.0)], audio_codec=None)
    make_video(root / "videos" / "soundonly.mp4", [Scene(2.0, 0, 800.0)], video_codec=None)
    good = (root / "videos" / "scenes.mp4").read_bytes()
    (root / "bad" / "truncated.mp4").parent.mkdir()
    (root / "bad" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "bad" / "empty.mp4").write_bytes(b"")
    (root / "bad" / "random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "bad" / "garbage.wav").write_bytes(b"RIFF" + np.random.default_rng(1).bytes(3000))
    samples = tone(500.0, 3.5, seed=3)
    make_sound(root / "sounds" / "a.wav", samples)
    make_sound(root / "sounds" / "b.flac", tone(700.0, 2.0, seed=4), "flac")
    make_sound(root / "sounds" / "c.mp3", tone(900.0, 2.0, seed=5), "libmp3lame")
    make_sound(root / "sounds" / "d.ogg", tone(1100.0, 2.0, seed=6), "libopus")
    make_sound(root / "sounds" / "e.m4a", tone(1300.0, 2.0, seed=7), "aac", fmt="mp4")
    wav = (root / "sounds" / "a.wav").read_bytes()
    (root / "bad" / "cut.wav").write_bytes(wav[: 44 + 2 * 16000 * 2])  # header + 2 s of 3.5
    return root


def vectors_of(lib: Library, path: Path) -> list[tuple[str, float, float]]:
    return [(v.modality, v.start_s, v.end_s) for v in lib.vectors_of(str(path))]


def item_of(lib: Library, path: Path):
    item = lib.item_at(str(path))
    assert item is not None
    return item


# -- decoding --------------------------------------------------------------------------------


def test_frames_sampled_by_time_plus_scene_changes(media):
    import av

    from jrsearch.indexer.video import iter_frames

    with av.open(str(media / "videos" / "scenes.mp4")) as container:
        frames = list(iter_frames(container, fps=0.4))
    assert [round(f.time_s, 3) for f in frames] == [0.0, 2.5, 3.0, 5.0]  # 3.0 s is the cut
    assert [f.scene_change for f in frames] == [False, False, True, False]
    assert np.abs(np.asarray(frames[2].image, dtype=float) - picture(2)).mean() < 12  # the new scene's picture


def test_variable_frame_rate_uses_timestamps(media):
    import av

    from jrsearch.indexer.video import iter_frames

    with av.open(str(media / "videos" / "vfr.mp4")) as container:
        times = [f.time_s for f in iter_frames(container, fps=1.0) if not f.scene_change]
    assert len(times) == 4
    for second, t in enumerate(times):
        assert second <= t < second + 0.25  # the first frame at or after each whole second


def test_frames_are_embedded_in_bounded_batches_as_they_decode(media):
    from jrsearch.indexer.video import embed_frames

    class Counting:  # an image tower that records the batches it is given
        dim, image_size = 4, 64
        def __init__(self) -> None:
            self.batches: list[int] = []

        def preprocess(self, image):
            return np.zeros((3, 8, 8), np.float32)

        def encode_images(self, batch):
            self.batches.append(len(batch))
            return np.ones((len(batch), self.dim), np.float32)

    tower = Counting()
    vectors, _, size, duration = embed_frames(media / "videos" / "scenes.mp4", tower, 1.0, 4, [])
    assert tower.batches == [4, 2] and len(vectors) == 6  # never more than a batch of frames held
    assert (size, duration) == ((64, 64), 6.0)


def test_audio_is_streamed_in_chunks_at_the_asked_rate(media):
    from jrsearch.retrieval.audioio import iter_audio

    chunks = list(iter_audio(media / "sounds" / "a.wav", 8000, chunk_s=1.0))
    assert [c.start_s for c in chunks] == [0.0, 1.0, 2.0, 3.0]
    assert [len(c.samples) for c in chunks] == [8000, 8000, 8000, 4000]
    spectrum = np.abs(np.fft.rfft(chunks[0].samples))
    assert abs(np.argmax(spectrum) * 8000 / 8000 - 500) <= 2  # the 500 Hz tone survived resampling


# -- indexing --------------------------------------------------------------------------------


def test_without_audio_tower_frames_are_indexed_and_sound_skipped(media, tmp_path, tiny_encoder, tower):
    lib = Library.open(tmp_path / "lib", create=True)
    report = run_index(lib, tiny_encoder, [media / "videos", media / "sounds"], IndexOptions())
    assert report.skipped == 6 and not report.failed  # soundonly.mp4 is a sound by its streams, not a video
    assert any("6 sound files skipped: no audio tower" in n for n in report.notes)
    assert any(n.startswith("3 video soundtracks skipped") for n in report.notes)  # silent.mp4 has none
    rows = vectors_of(lib, media / "videos" / "scenes.mp4")
    assert rows == [("image", float(t), float(t + 1)) for t in range(6)] + [("image", 0.0, 6.0)]
    item = item_of(lib, media / "videos" / "scenes.mp4")
    assert (item.status, item.width, item.height, item.duration_s) == ("indexed", 64, 64, 6.0)

    engine = SearchEngine(lib, encoder=tiny_encoder)
    query = tmp_path / "scene2.png"
    from PIL import Image

    Image.fromarray(picture(2)).save(query)
    best = engine.search(engine.embed("image", query), kind=MediaKind.VIDEO, top_k=5)
    assert best[0].path == str(media / "videos" / "scenes.mp4")
    assert best[0].start_s >= 3.0 and best[0].end_s <= 6.0  # the moment of the matching scene
    by_text = engine.search(engine.embed_text("a red square"), kind=MediaKind.VIDEO, top_k=10)
    assert by_text and all(r.start_s is not None and r.end_s is not None for r in by_text)

    # a tower arrives later: unchanged videos with sound get their soundtrack, the sound-only one
    # (skipped for want of a tower) is indexed as a sound, the silent one is left
    later = run_index(lib, tiny_encoder, [media / "videos"], IndexOptions(audio_model=tower))
    assert later.indexed == 4 and later.unchanged == 1 and not later.failed  # silent.mp4 unchanged
    assert {m for m, _, _ in vectors_of(lib, media / "videos" / "scenes.mp4")} == {"image", "audio"}
    assert {m for m, _, _ in vectors_of(lib, media / "videos" / "soundonly.mp4")} == {"audio"}
    with lib.store.read() as catalog:  # each video and sound's date taken, read from the container it opened
        unknown = catalog.con.execute("SELECT count(*) FROM items WHERE status = 'indexed' AND kind != 'text' "
                                      "AND taken_source IS NULL").fetchone()[0]
    assert unknown == 0
    sound_only = item_of(lib, media / "videos" / "soundonly.mp4")
    assert (sound_only.status, sound_only.kind) == ("indexed", "audio")
    assert run_index(lib, tiny_encoder, [media / "videos"], IndexOptions()).indexed == 0
    lib.close()


def test_index_everything_with_audio_tower_and_bad_files(media, tmp_path, tiny_encoder, tower):
    lib = Library.open(tmp_path / "lib", create=True)
    report = run_index(lib, tiny_encoder, [media], IndexOptions(audio_model=tower))
    failed = dict(report.failed)
    assert failed[str(media / "bad" / "empty.mp4")] == "empty file (0 bytes)"
    for name in ("truncated.mp4", "random.mp4"):
        assert failed[str(media / "bad" / name)].startswith("not a video PyAV can open")
    assert str(media / "bad" / "garbage.wav") in failed
    assert len(failed) == 4 and report.indexed == 11 and report.skipped == 0
    assert lib.status()["audio_model"] | {"path": None} == {"path": None, "kind": "jrsearch", "dim": tiny_encoder.dim}

    scenes = vectors_of(lib, media / "videos" / "scenes.mp4")
    assert [r for r in scenes if r[0] == "image"] == [("image", float(t), float(t + 1)) for t in range(6)] + [
        ("image", 0.0, 6.0)]
    sound = [r for r in scenes if r[0] == "audio"]
    assert [(s, e) for _, s, e in sound[:6]] == [(float(t), float(t + 1)) for t in range(6)]
    assert sound[-1][1] == 0.0 and sound[-1][2] == pytest.approx(6.0, abs=0.05)  # pooled soundtrack
    assert {m for m, _, _ in vectors_of(lib, media / "videos" / "silent.mp4")} == {"image"}
    assert {m for m, _, _ in vectors_of(lib, media / "videos" / "soundonly.mp4")} == {"audio"}
    assert len(vectors_of(lib, media / "videos" / "odd.avi")) == 2 + 1 + 2 + 1

    assert vectors_of(lib, media / "sounds" / "a.wav") == [("audio", 0.0, 1.0), ("audio", 1.0, 2.0),
                                                          ("audio", 2.0, 3.0), ("audio", 3.0, 3.5),
                                                          ("audio", 0.0, 3.5)]
    for name in ("b.flac", "c.mp3", "d.ogg", "e.m4a"):
        assert item_of(lib, media / "sounds" / name).duration_s == pytest.approx(2.0, abs=0.1), name
    cut = item_of(lib, media / "bad" / "cut.wav")  # truncated: indexed as far as it goes
    assert cut.status == "indexed" and cut.duration_s == pytest.approx(2.0, abs=0.01)

    # a second run changes nothing; another tower is refused
    again = run_index(lib, tiny_encoder, [media], IndexOptions())
    assert again.indexed == 0 and again.unchanged == 11 + 4
    from jrsearch.retrieval.errors import ModelMismatchError

    other = make_tower(tmp_path / "other.pt")
    other.write_bytes(other.read_bytes() + b"\0")  # same weights, other bytes: another checkpoint
    (media / "sounds" / "new.wav").write_bytes((media / "sounds" / "a.wav").read_bytes())
    try:
        with pytest.raises(ModelMismatchError, match="holds sound vectors from audio tower"):
            run_index(lib, tiny_encoder, [media / "sounds"], IndexOptions(audio_model=other))
    finally:
        (media / "sounds" / "new.wav").unlink()

    engine = SearchEngine(lib, encoder=tiny_encoder)
    clip = make_sound(tmp_path / "q.wav", soundtrack(SCENES))  # the sound of scenes.mp4
    hits = engine.search(engine.embed("audio", clip), kind=MediaKind.VIDEO, top_k=3)
    assert hits[0].path == str(media / "videos" / "scenes.mp4") and hits[0].score > 0.98
    moment = make_sound(tmp_path / "moment.wav", tone(1200.0, 3.0, seed=1)[:16000])  # 3-4 s of its sound
    hit = engine.search(engine.embed("audio", moment), kind=MediaKind.VIDEO, top_k=1)[0]
    assert (hit.path, hit.start_s, hit.end_s) == (str(media / "videos" / "scenes.mp4"), 3.0, 4.0)
    same = engine.search(engine.embed("audio", media / "sounds" / "b.flac"), kind=MediaKind.AUDIO, top_k=2)
    assert same[0].path == str(media / "sounds" / "b.flac") and same[0].score > 0.99
    assert engine.search(engine.embed("audio", clip), kind=MediaKind.IMAGE) == []  # no images indexed: empty
    from jrsearch.retrieval.errors import QueryError

    with pytest.raises(QueryError, match="cannot use"):
        engine.embed("audio", media / "bad" / "garbage.wav")
    lib.close()


def test_audio_to_image_and_query_without_tower(tmp_path, tiny_encoder, tower):
    from jrsearch.retrieval.errors import QueryError

    lib = Library.open(tmp_path / "lib", create=True)
    make_image(tmp_path / "photos" / "x.png", seed=1)
    run_index(lib, tiny_encoder, [tmp_path / "photos"], IndexOptions())
    clip = make_sound(tmp_path / "q.wav", tone(440.0, 1.0))
    engine = SearchEngine(lib, encoder=tiny_encoder)
    with pytest.raises(QueryError, match="no audio tower"):
        engine.embed("audio", clip)
    run_index(lib, tiny_encoder, [clip], IndexOptions(audio_model=tower))  # sound indexed: the tower is recorded
    engine = SearchEngine(lib, encoder=tiny_encoder)
    hits = engine.search(engine.embed("audio", clip), kind=MediaKind.IMAGE)
    assert [h.path for h in hits] == [str(tmp_path / "photos" / "x.png")]
    assert engine.search(engine.embed("audio", clip), kind=MediaKind.AUDIO)[0].score > 0.99
    lib.close()


# -- the command line -------------------------------------------------------------------------


def test_cli_audio_query_and_options(media, tmp_path, tower):
    from typer.testing import CliRunner

    from jrsearch.cli.main import app

    runner = CliRunner()
    lib = str(tmp_path / "lib")
    wrong = make_tower(tmp_path / "wrong.pt", ModelSpec("ViT-B-32", "openai"), 64)
    result = runner.invoke(app, ["index", str(media / "videos"), "--library", lib, "--model", "tiny-test",
                                 "--audio-model", str(wrong), "--json"])
    assert result.exit_code == 1 and "was aligned to ViT-B-32/openai" in result.output
    result = runner.invoke(app, ["index", str(media / "videos" / "scenes.mp4"), "--library", lib, "--model",
                                 "tiny-test", "--audio-model", str(tower), "--video-fps", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["indexed"] == 1
    query = make_sound(tmp_path / "q.wav", tone(1200.0, 3.0, seed=1)[:16000])
    result = runner.invoke(app, ["query", "--audio", str(query), "--kind", "video", "--library", lib, "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)[0]
    assert top["path"].endswith("scenes.mp4") and (top["start_s"], top["end_s"]) == (3.0, 4.0)
    result = runner.invoke(app, ["query", "words", "--audio", str(query), "--library", lib])
    assert result.exit_code == 1 and "give one of" in result.output


def test_a_video_without_pictures_or_tower_fails_with_a_retryable_code(media, tiny_encoder):
    from jrsearch.indexer.video import embed_video
    from jrsearch.retrieval.errors import FailureCode, MediaError

    with pytest.raises(MediaError) as caught:
        embed_video(media / "videos" / "soundonly.mp4", tiny_encoder, audio=None)
    failure = caught.value
    assert (failure.code, failure.retryable) == (FailureCode.NEEDS_AUDIO_TOWER, True)
    assert failure.reason == "no video stream (and no audio tower to index its sound)"  # the stored text, unchanged
    assert failure.reason.endswith(FailureCode.NEEDS_AUDIO_TOWER.note)  # for a reader; the store keeps the code
    assert str(failure) == f"{media / 'videos' / 'soundonly.mp4'}: {failure.reason}"


def test_the_audio_tower_is_a_registry_tower_like_the_joint_model(tmp_path, tiny_encoder, tower):
    import torch

    from jrsearch.retrieval.encoders import audio_spec, load_audio_tower, load_encoder, load_tower, modalities_of
    from jrsearch.retrieval.encoders.audio import AudioTowerConfig, log_mel, pool
    from jrsearch.retrieval.errors import ModelUnavailableError

    assert modalities_of(TINY_SPEC) == ("text", "image") and modalities_of(audio_spec(tower)) == ("audio",)
    audio = load_tower(audio_spec(tower))
    assert audio.modalities == ("audio",) and audio.spec == audio_spec(tower) and audio.dim == tiny_encoder.dim
    waves = np.random.default_rng(0).normal(0, 0.1, (5, audio.window_samples)).astype(np.float32)
    audio.batch_size = 2  # batching is the tower's own business: three batches, the same rows
    rows = audio.encode("audio", waves)
    assert rows.dtype == np.float32 and rows.shape == (5, audio.dim)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    config = AudioTowerConfig(dim=64)
    with torch.inference_mode():  # what the tower's module gives on the log-mel features, normalised by hand
        raw = audio.module(torch.from_numpy(log_mel(waves, config))).numpy()
    assert np.allclose(rows, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    with pytest.raises(ModelUnavailableError, match="not images"):
        load_encoder(audio_spec(tower))
    with pytest.raises(ModelUnavailableError, match="not an audio tower"):
        load_audio_tower(TINY_SPEC)

    lib = Library.open(tmp_path / "lib", create=True)
    make_image(tmp_path / "photos" / "x.png", seed=1)
    run_index(lib, tiny_encoder, [tmp_path / "photos"], IndexOptions())
    assert SearchEngine(lib, encoder=tiny_encoder).modalities() == ("text", "image")
    clip = make_sound(tmp_path / "q.wav", tone(440.0, 1.0))
    run_index(lib, tiny_encoder, [clip], IndexOptions(audio_model=tower))
    engine = SearchEngine(lib, encoder=tiny_encoder)
    assert engine.modalities() == ("text", "image", "audio")  # asked of the registry: nothing loaded
    assert not engine.towers._loaded
    from jrsearch.retrieval.audioio import read_audio

    windows, _ = audio.windows(read_audio(clip, audio.sample_rate))
    assert np.allclose(engine.embed("audio", clip), pool(audio.encode("audio", windows)), atol=1e-6)
    assert engine.towers.get("audio").spec == audio_spec(tower.resolve())
    lib.close()
