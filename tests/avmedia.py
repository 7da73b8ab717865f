"""Videos and sounds the tests make themselves with PyAV: scenes whose picture and tone change at
known times, so indexed time ranges can be checked."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

RATE = 16000


@dataclass(frozen=True)
class Scene:
    seconds: float
    seed: int  # picks the picture (a blocky random pattern)
    tone_hz: float  # the soundtrack during the scene


def picture(seed: int, side: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((side // 4, side // 4, 1), dtype=np.uint8))


def tone(hz: float, seconds: float, rate: int = RATE, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi)) + noise * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def soundtrack(scenes: list[Scene], rate: int = RATE) -> np.ndarray:
    return np.concatenate([tone(s.tone_hz, s.seconds, rate, seed=i) for i, s in enumerate(scenes)])


def make_video(path: Path, scenes: list[Scene], fps: int = 8, video_codec: str | None = "libx264",
               audio_codec: str | None = "aac", vfr: bool = False) -> Path:
    """A small video (64x64) of `scenes`; no video stream when `video_codec` is None, no sound when
    `audio_codec` is None; `vfr` spaces the frames irregularly (variable frame rate)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        video = sound = None
        if video_codec:
            video = container.add_stream(video_codec, rate=fps)
            video.width = video.height = 64
            video.pix_fmt = "yuv420p"
            video.codec_context.time_base = Fraction(1, 1000)
            video.time_base = Fraction(1, 1000)
        if audio_codec:
            sound = add_audio_stream(container, audio_codec)
        if video is not None:
            for ms, image in _frame_times(scenes, fps, vfr):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = ms
                frame.time_base = Fraction(1, 1000)
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
        if sound is not None:
            write_audio(container, sound, soundtrack(scenes))
    return path


def _frame_times(scenes: list[Scene], fps: int, vfr: bool):
    start = 0.0
    rng = np.random.default_rng(7)
    for scene in scenes:
        t = start
        while t < start + scene.seconds - 1e-9:
            yield round(t * 1000), picture(scene.seed)
            t += (1.0 / fps) * (rng.uniform(0.3, 1.7) if vfr else 1.0)
        start += scene.seconds


def add_audio_stream(container, codec: str):
    rate = 48000 if codec == "libopus" else RATE
    stream = container.add_stream(codec, rate=rate, layout="mono")
    stream.time_base = Fraction(1, rate)
    return stream


def write_audio(container, stream, samples: np.ndarray) -> None:
    import av

    rate = stream.codec_context.sample_rate
    if rate != RATE:
        samples = np.interp(np.arange(int(len(samples) * rate / RATE)) * RATE / rate, np.arange(len(samples)),
                            samples).astype(np.float32)
    fmt = stream.codec_context.format.name
    size = stream.codec_context.frame_size or 1024
    for start in range(0, len(samples), size):
        piece = samples[start:start + size]
        if fmt.startswith("s16"):
            array = (np.clip(piece, -1, 1) * 32767).astype(np.int16)[None]
        elif fmt.startswith("s32"):
            array = (np.clip(piece, -1, 1) * 2147483647).astype(np.int32)[None]
        else:
            array = piece.astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(array, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def make_sound(path: Path, samples: np.ndarray, codec: str = "pcm_s16le", fmt: str | None = None) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format=fmt) as container:
        write_audio(container, add_audio_stream(container, codec), samples)
    return path
