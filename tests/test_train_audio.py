"""Learning the audio tower: the loss falls and retrieval beats chance on generated audio-visual
pairs, CMA's positives, determinism and resuming, checkpoints, and `jrsearch train audio`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import FSDD_DIR, Scene, make_video, picture, tone

from jrsearch.retrieval.encoders.audio import AudioTowerConfig, load_audio_encoder
from jrsearch.retrieval.errors import ModelMismatchError, ModelUnavailableError
from jrsearch.retrieval.training.avid import (
    PairSet,
    TrainConfig,
    cma_positives,
    multi_positive_nce,
    save_loss_curve,
    train_audio_tower,
)
from jrsearch.retrieval.types import ModelSpec

TINY = ModelSpec("tiny-test", "")
TONES = [300.0, 500.0, 800.0, 1200.0, 1800.0, 2500.0, 3500.0, 5000.0]


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def class_images() -> np.ndarray:
    """One picture per class through a frozen image tower: a fixed random projection of the centred
    pixels to 64-d. (The offline tiny-test open_clip tower has random weights and maps these pictures
    to nearly one point, cosine > 0.98, which says nothing about the trainer.)"""
    pixels = np.stack([picture(10 + k).reshape(-1) for k in range(len(TONES))]).astype(np.float32)
    pixels -= pixels.mean(axis=0)
    vectors = pixels @ np.random.default_rng(0).standard_normal((pixels.shape[1], 64)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def clips(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy tones of random loudness, `per_class` of each class, and their class labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(TONES)), per_class)
    waves = np.stack([tone(TONES[k], 1.0, seed=int(rng.integers(1 << 30)), noise=0.1) * rng.uniform(0.2, 1.0)
                      for k in labels])
    return waves, labels


@pytest.mark.slow
def test_training_loss_falls_and_retrieval_beats_chance(tmp_path, class_images):
    config = AudioTowerConfig(dim=class_images.shape[1])
    waves, labels = clips(16, seed=0)
    pairs = PairSet.from_windows(waves, class_images[labels], config)
    result = train_audio_tower(pairs, config, TINY, TrainConfig(epochs=8, batch_size=32, lr=5e-3), tmp_path / "t.pt")
    assert len(result.losses) == 8 and result.losses[-1] < 0.7 * result.losses[0]

    encoder = load_audio_encoder(tmp_path / "t.pt", TINY, config.dim)
    test_waves, test_labels = clips(4, seed=1)  # new recordings
    found = (encoder.encode("audio", test_waves) @ class_images.T).argmax(axis=1)
    assert (found == test_labels).mean() >= 0.6  # chance: 1/8


def test_cma_positives_need_agreement_in_both_spaces():
    import torch

    near = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]]), dim=1)
    other = near[[0, 2, 1, 3]]  # the image space pairs 0 with 2 and 1 with 3 instead
    agree = cma_positives(near, near, k=1)
    assert agree.tolist() == [[True, True, False, False], [True, True, False, False],
                              [False, False, True, True], [False, False, True, True]]
    assert torch.equal(cma_positives(near, other, k=1), torch.eye(4, dtype=torch.bool))


def test_single_positive_nce_is_cross_entropy():
    import torch

    q = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    k = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    ours = multi_positive_nce(q, k, torch.eye(6, dtype=torch.bool), 0.1)
    assert torch.allclose(ours, torch.nn.functional.cross_entropy(q @ k.T / 0.1, torch.arange(6)))


@pytest.mark.parametrize("ema", [0.0, 0.9], ids=["last-weights", "ema"])
def test_seeded_runs_match_and_resume_continues_exactly(tmp_path, class_images, ema):
    import torch

    config = AudioTowerConfig(dim=class_images.shape[1])
    waves, labels = clips(4, seed=2)
    pairs = PairSet.from_windows(waves, class_images[labels], config)
    settings = TrainConfig(epochs=3, batch_size=16, cma_k=2, cma_start=0.3, queue_size=16, ema=ema, seed=5)
    whole = train_audio_tower(pairs, config, TINY, settings, tmp_path / "whole.pt")

    class Stop(Exception):
        pass

    def stop_after_two(epoch: int, loss: float) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train_audio_tower(pairs, config, TINY, settings, tmp_path / "cut.pt", on_epoch=stop_after_two)
    resumed = train_audio_tower(pairs, config, TINY, settings, tmp_path / "cut.pt", resume=True)
    assert resumed.resumed_from == 2 and resumed.losses == whole.losses
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[name], b[name]) for name in a)
    from jrsearch.retrieval.errors import JrsearchError

    with pytest.raises(JrsearchError, match="other settings"):
        train_audio_tower(pairs, config, TINY, TrainConfig(epochs=3, seed=6), tmp_path / "cut.pt", resume=True)


def test_ema_tower_is_an_average_not_the_last_weights(tmp_path, class_images):
    import torch

    config = AudioTowerConfig(dim=class_images.shape[1])
    waves, labels = clips(4, seed=3)
    pairs = PairSet.from_windows(waves, class_images[labels], config)
    train_audio_tower(pairs, config, TINY, TrainConfig(epochs=3, batch_size=16, ema=0.9), tmp_path / "ema.pt")
    payload = torch.load(tmp_path / "ema.pt", weights_only=True)
    averaged, last = payload["state_dict"], payload["train_state"]["model"]
    assert any(not torch.allclose(averaged[k], last[k]) for k in averaged if averaged[k].dtype.is_floating_point)
    plain = train_audio_tower(pairs, config, TINY, TrainConfig(epochs=3, batch_size=16), tmp_path / "plain.pt")
    assert plain.losses and all(torch.equal(last[k], v) for k, v in
                                torch.load(tmp_path / "plain.pt", weights_only=True)["state_dict"].items())


def test_liftering_keeps_the_envelope_and_drops_the_pitch():
    """Two buzzes with the same spectral envelope at different pitches: liftered features of the
    two are much closer than plain log-mel ones."""
    from scipy.signal import lfilter

    from jrsearch.retrieval.encoders.audio import log_mel

    rate = 16000

    def buzz(pitch: float) -> np.ndarray:
        pulses = np.zeros(rate, dtype=np.float32)
        pulses[::int(rate / pitch)] = 1.0
        return lfilter([1.0], [1.0, -1.3, 0.8], pulses).astype(np.float32)  # one resonance: a crude vowel

    low, high = buzz(100.0), buzz(130.0)
    plain, liftered = AudioTowerConfig(), AudioTowerConfig(lifter=13)
    gap = lambda cfg: float(np.abs(log_mel(low[None], cfg) - log_mel(high[None], cfg)).mean())  # noqa: E731
    assert gap(liftered) < 0.6 * gap(plain)


def test_checkpoint_round_trip_and_refusals(tmp_path, class_images):
    import torch

    config = AudioTowerConfig(dim=class_images.shape[1])
    waves, labels = clips(2, seed=3)
    out = tmp_path / "tower.pt"
    train_audio_tower(PairSet.from_windows(waves, class_images[labels], config), config, TINY,
                      TrainConfig(epochs=1, batch_size=8), out)
    encoder = load_audio_encoder(out, TINY, config.dim)
    vectors = encoder.encode("audio", waves)
    assert vectors.shape == (len(waves), config.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(load_audio_encoder(out).encode("audio", waves), vectors, atol=1e-6)  # same tower again
    assert encoder.info.image_model == TINY and encoder.info.kind == "jrsearch"

    with pytest.raises(ModelMismatchError, match="aligned to tiny-test"):
        load_audio_encoder(out, ModelSpec("ViT-B-32", "laion2b_s34b_b79k"), 512)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="unreadable"):
        load_audio_encoder(tmp_path / "junk.pt")
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_audio_encoder(tmp_path / "missing.pt")
    torch.save({"state_dict": {"audio_encoder.conv1.weight": torch.zeros(1)}}, tmp_path / "w2c.pt")
    if importlib.util.find_spec("wav2clip") is None:
        with pytest.raises(ModelUnavailableError, match="pip install wav2clip"):
            load_audio_encoder(tmp_path / "w2c.pt")

    save_loss_curve([3.0, 2.0, 1.5], tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_train_audio_from_videos_and_resume(tmp_path):
    from typer.testing import CliRunner

    from jrsearch.cli.main import app

    for k in range(3):
        make_video(tmp_path / "videos" / f"v{k}.mp4", [Scene(2.0, 20 + k, TONES[k]), Scene(2.0, 30 + k, TONES[k + 3])],
                   fps=4)
    make_video(tmp_path / "videos" / "silent.mp4", [Scene(2.0, 40, 0.0)], fps=4, audio_codec=None)
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\0" * 100)
    out = tmp_path / "tower.pt"
    args = ["train", "audio", str(tmp_path / "videos"), "--out", str(out), "--model", "tiny-test",
            "--library", str(tmp_path / "nolib"), "--batch-size", "8", "--fps", "2", "--cma", "2", "--ema", "0.9",
            "--lifter", "13", "--json"]
    result = CliRunner().invoke(app, [*args, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["pairs"] == 3 * 8 and summary["epochs"] == 2 and summary["image_model"] == "tiny-test"
    assert (summary["videos"], summary["videos_used"]) == (5, 3)  # the silent and the broken one teach nothing
    assert len(summary["skipped"]) == 1 and "broken.mp4" in summary["skipped"][0]
    assert Path(summary["loss_curve"]).read_bytes()[:4] == b"\x89PNG"
    assert load_audio_encoder(out, TINY, 64).info.window_s == 1.0
    import torch

    saved = torch.load(out, weights_only=True)
    assert saved["config"]["lifter"] == 13 and saved["train_state"]["config"]["ema"] == 0.9

    result = CliRunner().invoke(app, [*args, "--epochs", "3", "--resume"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["resumed_from"], summary["epochs"]) == (2, 3)


def test_benchmark_metrics_on_a_known_ranking():
    from jrsearch.benchmarks.fsdd_av import retrieval_metrics

    scores = np.array([[0.9, 0.8, 0.1], [0.1, 0.9, 0.8]])
    metrics = retrieval_metrics(scores, np.array([0, 1]), np.array([1, 0, 1]))
    # query 0 ranks [1, 0, 1]: first hit at 2, AP 1/2; query 1 ranks [0, 1, 1]: first hit at 2, AP (1/2 + 2/3) / 2
    assert (metrics["R@1"], metrics["R@5"], metrics["median_rank"]) == (0.0, 1.0, 2.0)
    assert metrics["mAP"] == pytest.approx((0.5 + (0.5 + 2 / 3) / 2) / 2)


def test_fsdd_recordings_load_as_windows(tmp_path):
    if not FSDD_DIR.is_dir():
        pytest.skip(f"FSDD recordings not found at {FSDD_DIR} (the shared data folder is absent)")
    from jrsearch.benchmarks.fsdd_av import load_fsdd

    sample = tmp_path / "fsdd"
    sample.mkdir()
    for name in ("0_george_0.wav", "7_theo_3.wav"):
        (sample / name).symlink_to(FSDD_DIR / name)
    windows, digits, speakers = load_fsdd(sample, 16000, 16000)
    assert windows.shape == (2, 16000) and digits.tolist() == [0, 7] and speakers.tolist() == ["george", "theo"]
    assert np.abs(windows).max() > 0.05  # real speech, resampled from 8 kHz
