"""The audio tower: sound windows -> the joint space of one image model.

jrsearch's own tower reads log-mel features (librosa's mel filterbank) of fixed-length windows
through a small CNN and projects them to the image model's dimension, L2-normalised. It is
trained against a frozen image tower (`retrieval/training/avid.py`), so its checkpoint records
that image model: loading it for a library built with another model is a `ModelMismatchError`.

The tower is a model family of the encoder registry (`encoders.ENCODER_FACTORIES`, spec
`audio_spec(checkpoint)`, modality "audio"): `AudioEncoder` is a `Tower` like the joint model,
numpy windows in (`windows` cuts them), batched inside, unit float32 rows out.

Pretrained audio models plug in at `load_audio_encoder`: a checkpoint is recognised by its
content, and `load_wav2clip` turns Wav2CLIP's released checkpoint (a ResNet over raw 16 kHz audio,
distilled into OpenAI CLIP ViT-B/32's space, 512-d) into the same `AudioEncoder`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jrsearch.retrieval.errors import MediaError, ModelMismatchError, ModelUnavailableError, QueryError
from jrsearch.retrieval.fileio import write_atomic
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    import torch

AUDIO_FAMILY = "audio"  # the registry's family of sound towers: ModelSpec("audio", checkpoint path)
CHECKPOINT_FORMAT = "jrsearch-audio-tower"
CHECKPOINT_VERSION = 1
WAV2CLIP_IMAGE_MODEL = ModelSpec("ViT-B-32", "openai")  # the CLIP model Wav2CLIP was distilled from
WAV2CLIP_SAMPLE_RATE = 16000
TOP_DB = 80.0  # log-mel floor below each window's peak
MIN_WINDOW_FRACTION = 0.1  # a trailing piece shorter than this share of a window is dropped


def audio_spec(checkpoint: str | Path) -> ModelSpec:
    """The registry's name for the audio tower in `checkpoint` (`jrsearch train audio` or Wav2CLIP)."""
    return ModelSpec(AUDIO_FAMILY, str(checkpoint))


@dataclass(frozen=True)
class AudioTowerConfig:
    sample_rate: int = 16000
    window_s: float = 1.0
    n_mels: int = 40
    n_fft: int = 512
    hop_length: int = 320  # 20 ms frames
    fmin: float = 20.0
    lifter: int = 0  # >0: keep this many cepstral coefficients of each frame (see `log_mel`); 0: off
    width: int = 64  # channels of the first conv blocks; doubled for the last two
    dim: int = 64  # the joint space's dimension (the image model's)

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)


def log_mel(windows: np.ndarray, config: AudioTowerConfig) -> np.ndarray:
    """(n, samples) float waveforms -> (n, 1, n_mels, frames) float32 log-mel features.

    Decibels relative to each window's loudest bin, floored at -80 dB and divided by 20: the
    level a sound was recorded at (microphone, distance, speaker) does not move the features.
    With `config.lifter` N, each frame's log spectrum is smoothed by keeping its first N cepstral
    coefficients (DCT over the mel bands): the envelope (formants) stays, the harmonics of the
    voice's pitch go, which helps speech from voices the tower never heard.
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(windows, dtype=np.float32), sr=config.sample_rate, n_fft=config.n_fft,
        hop_length=config.hop_length, n_mels=config.n_mels, fmin=config.fmin, fmax=config.sample_rate / 2,
        power=2.0)
    peak = np.maximum(mel.max(axis=(-2, -1), keepdims=True), 1e-10)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10) / peak)
    features = np.maximum(db, -TOP_DB) / 20.0
    if config.lifter:
        from scipy.fft import dct, idct

        cepstra = dct(features, type=2, norm="ortho", axis=-2)
        cepstra[..., config.lifter:, :] = 0.0
        features = idct(cepstra, type=2, norm="ortho", axis=-2)
    return features.astype(np.float32)[:, None]


def build_tower(config: AudioTowerConfig) -> torch.nn.Module:
    """A compact 1-D CNN over log-mel frames (mel bands as channels, time-delay style) with a
    projection head into `config.dim`."""
    import torch
    from torch import nn

    def block(c_in: int, c_out: int, kernel: int, stride: int) -> list:
        return [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
                nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]

    w = config.width

    class AudioTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(config.n_mels)  # learns the scale of each band's log energy
            self.body = nn.Sequential(*block(config.n_mels, w, 5, 1), *block(w, w, 5, 2), *block(w, 2 * w, 3, 2),
                                      *block(2 * w, 2 * w, 3, 1))
            self.head = nn.Sequential(nn.Linear(4 * w, 4 * w), nn.ReLU(inplace=True), nn.Linear(4 * w, config.dim))

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            x = self.body(self.norm(features.flatten(1, 2)))  # (n, 1, mels, frames) -> (n, c, frames')
            x = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)
            return self.head(x)  # not normalised: `AudioEncoder` and the loss normalise

    return AudioTower()


@dataclass(frozen=True)
class AudioTowerInfo:
    """What an audio encoder is: where it came from and which image model's space it maps into."""

    source: str  # the checkpoint path
    kind: str  # "jrsearch" or "wav2clip"
    image_model: ModelSpec
    dim: int
    sample_rate: int
    window_s: float


class AudioEncoder:
    """Sound -> the joint space, a `Tower` of modality "audio". `frontend` turns waveforms into the
    module's input."""

    modalities: tuple[str, ...] = ("audio",)
    backend = "torch"

    def __init__(self, module: torch.nn.Module, frontend: Callable[[np.ndarray], np.ndarray], info: AudioTowerInfo,
                 device: str = "cpu", batch_size: int = 64) -> None:
        self.module = module.eval().to(device)
        self.frontend = frontend
        self.info = info
        self.spec = audio_spec(info.source)
        self.device = device
        self.batch_size = batch_size
        self.notes: list[str] = []

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def window_samples(self) -> int:
        return round(self.info.window_s * self.info.sample_rate)

    def check_image_model(self, spec: ModelSpec, dim: int) -> None:
        if self.info.image_model != spec or self.info.dim != dim:
            raise ModelMismatchError(
                f"audio tower {self.info.source} was aligned to {self.info.image_model.label()} (dim {self.info.dim}), "
                f"not {spec.label()} (dim {dim}); train one for this model with `jrsearch train audio DIR "
                f"--model {spec.name}` or use a library built with {self.info.image_model.label()}")

    def encode(self, modality: str, batch: Any) -> np.ndarray:
        """(n, window_samples) waveforms -> (n, dim) L2-normalised float32 (`modality` is "audio")."""
        import torch

        windows = np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)
        out = []
        with torch.inference_mode():
            for start in range(0, len(windows), self.batch_size):
                x = torch.from_numpy(self.frontend(windows[start:start + self.batch_size])).to(self.device)
                out.append(torch.nn.functional.normalize(self.module(x).float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def embed_query(self, modality: str, query: str | Path) -> np.ndarray:
        """A sound file as one query vector: the pooled vectors of its windows."""
        from jrsearch.retrieval.audioio import read_audio

        path = Path(query)
        if not path.is_file():
            raise QueryError(f"query sound {path} does not exist")
        try:
            samples = read_audio(path, self.sample_rate)
        except MediaError as exc:
            raise QueryError(f"cannot use {path} as a query: {exc.reason}") from None
        return self.embed_clip(samples)

    def windows(self, samples: np.ndarray, offset_s: float = 0.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """Cut a waveform into consecutive windows (the last one zero-padded) with their times."""
        n = self.window_samples
        rate = self.sample_rate
        starts = list(range(0, max(len(samples), 1), n))
        if len(starts) > 1 and len(samples) - starts[-1] < MIN_WINDOW_FRACTION * n:
            starts.pop()
        out = np.zeros((len(starts), n), dtype=np.float32)
        spans = []
        for i, start in enumerate(starts):
            piece = samples[start:start + n]
            out[i, :len(piece)] = piece
            spans.append((offset_s + start / rate, offset_s + (start + len(piece)) / rate))
        return out, spans

    def embed_clip(self, samples: np.ndarray) -> np.ndarray:
        """One vector for a whole sound: the normalised mean of its window vectors."""
        windows, _ = self.windows(samples)
        return pool(self.encode("audio", windows))


def pool(vectors: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of unit vectors (a clip's or a video's single vector)."""
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


# -- checkpoints -----------------------------------------------------------------------------


def save_tower(path: Path, module: torch.nn.Module, config: AudioTowerConfig, image_model: ModelSpec,
               extra: dict | None = None) -> None:
    """Write a jrsearch audio tower checkpoint atomically (`extra`: training state, metadata)."""
    import torch

    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": asdict(config),
               "image_model": {"name": image_model.name, "pretrained": image_model.pretrained},
               "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}, **(extra or {})}
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise ModelUnavailableError(f"audio tower checkpoint {path} does not exist; train one with "
                                    f"`jrsearch train audio DIR --out {path.name}`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelUnavailableError(f"audio tower checkpoint {path} is unreadable ({type(exc).__name__}); "
                                    f"pass a file written by `jrsearch train audio` or a Wav2CLIP checkpoint") from None
    if not isinstance(payload, dict):
        raise ModelUnavailableError(f"{path} is not an audio tower checkpoint")
    return payload


def load_audio_encoder(path: Path, image_model: ModelSpec | None = None, image_dim: int | None = None,
                       device: str = "cpu") -> AudioEncoder:
    """Load an audio tower from a checkpoint, recognised by content; with `image_model` given, a
    tower aligned to another image model is a `ModelMismatchError`."""
    path = Path(path).expanduser().resolve()
    payload = read_checkpoint(path)
    if payload.get("format") == CHECKPOINT_FORMAT:
        encoder = _load_jrsearch(path, payload, device)
    elif _is_wav2clip(payload):
        encoder = load_wav2clip(path, payload, device)
    else:
        raise ModelUnavailableError(f"{path} is neither a jrsearch audio tower (from `jrsearch train audio`) nor a "
                                    f"Wav2CLIP checkpoint")
    if image_model is not None:
        encoder.check_image_model(image_model, image_dim if image_dim is not None else encoder.dim)
    return encoder


def _load_jrsearch(path: Path, payload: dict, device: str) -> AudioEncoder:
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise ModelUnavailableError(f"{path} was written by a newer jrsearch (format v{payload['version']})")
    config = AudioTowerConfig(**payload["config"])
    module = build_tower(config)
    module.load_state_dict(payload["state_dict"])
    spec = ModelSpec(payload["image_model"]["name"], payload["image_model"]["pretrained"])
    info = AudioTowerInfo(str(path), "jrsearch", spec, config.dim, config.sample_rate, config.window_s)
    return AudioEncoder(module, lambda w: log_mel(w, config), info, device=device)


def _is_wav2clip(payload: dict) -> bool:
    state = payload.get("state_dict")
    return isinstance(state, dict) and any(str(k).startswith("audio_encoder.") for k in state)


def load_wav2clip(path: Path, payload: dict | None = None, device: str = "cpu",
                  window_s: float = 1.0) -> AudioEncoder:
    """Wav2CLIP's released checkpoint (`Wav2CLIP.pt`: a Lightning state dict with `audio_encoder.*`
    and `audio_transform.*`) as an `AudioEncoder` in OpenAI CLIP ViT-B/32's space.

    Needs the `wav2clip` package for its ResNet definition (`pip install wav2clip`); the library
    that uses it must be built with `--model ViT-B-32 --pretrained openai`. Checkpoints are read with
    torch's safe loader; a copy carrying pickled extras it refuses can be reduced to its weights once:
    `torch.save({"state_dict": torch.load(p, weights_only=False)["state_dict"]}, "wav2clip.pt")`.
    """
    try:
        from wav2clip.model.encoder import ResNetExtractor
    except ImportError:
        raise ModelUnavailableError(f"{path} is a Wav2CLIP checkpoint; install its model code with "
                                    f"`pip install wav2clip` to use it") from None
    payload = payload if payload is not None else read_checkpoint(Path(path))
    module = ResNetExtractor(checkpoint=payload, scenario="frozen", transform=True)  # raw 16 kHz audio -> 512
    info = AudioTowerInfo(str(path), "wav2clip", WAV2CLIP_IMAGE_MODEL, 512, WAV2CLIP_SAMPLE_RATE, window_s)
    return AudioEncoder(module, lambda w: np.asarray(w, dtype=np.float32), info, device=device)


