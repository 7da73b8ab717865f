"""A sound as a picture: the log-mel spectrogram of a time range, drawn with numpy and Pillow
(no matplotlib in `serve`), for sound results' thumbnails (`thumbnails.ThumbnailCache`)."""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
from PIL import Image

from jrsearch.retrieval.audioio import iter_audio
from jrsearch.retrieval.errors import FailureCode, MediaError

RATE = 16000  # samples per second drawn: speech and most sounds live below 8 kHz
MAX_RANGE_S = 60.0  # a longer range (or a whole long file) is drawn up to this
MELS = 64
TOP_DB = 70.0  # quieter than the loudest by more than this is drawn black
# a dark-to-bright ramp (black, purple, red, orange, pale yellow), as magma-like maps draw sound
RAMP = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=np.float32)


def sound_range(source: BinaryIO, start_s: float, end_s: float | None, name: str) -> np.ndarray:
    """Mono samples at RATE from `start_s` to `end_s` (None: MAX_RANGE_S on) of the file `source` holds."""
    end_s = min(end_s if end_s is not None and end_s > start_s else start_s + MAX_RANGE_S, start_s + MAX_RANGE_S)
    parts = []
    for chunk in iter_audio(source, RATE, subject=name):
        chunk_end = chunk.start_s + len(chunk.samples) / RATE
        if chunk_end <= start_s:
            continue
        first = max(0, int((start_s - chunk.start_s) * RATE))
        last = int((end_s - chunk.start_s) * RATE)
        parts.append(chunk.samples[first:last])
        if chunk_end >= end_s:
            break
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if len(samples) < RATE // 50:
        raise MediaError(name, f"no sound between {start_s:.1f} s and {end_s:.1f} s", FailureCode.NO_CONTENT)
    return samples


def spectrogram_image(samples: np.ndarray, width: int, height: int) -> Image.Image:
    """The log-mel spectrogram of `samples` (low pitches at the bottom), coloured by loudness."""
    import librosa

    hop = max(64, len(samples) // width)
    mel = librosa.feature.melspectrogram(y=samples, sr=RATE, n_fft=1024, hop_length=hop, n_mels=MELS)
    db = librosa.power_to_db(mel, ref=np.max, top_db=TOP_DB)  # 0 at the loudest, down to -TOP_DB
    level = np.clip(1 + db / TOP_DB, 0, 1)[::-1] * (len(RAMP) - 1)
    low = np.minimum(level.astype(int), len(RAMP) - 2)
    rgb = RAMP[low] + (RAMP[low + 1] - RAMP[low]) * (level - low)[..., None]
    return Image.fromarray(rgb.astype(np.uint8), "RGB").resize((width, height), Image.Resampling.BILINEAR)


def sound_picture(source: BinaryIO, start_s: float, end_s: float | None, size: int, name: str) -> Image.Image:
    """A `size` wide, 3:4 tall picture of the sound in `source` over [start_s, end_s]."""
    return spectrogram_image(sound_range(source, start_s, end_s, name), size, size * 3 // 4)
