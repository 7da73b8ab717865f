"""Reading sound: any audio stream PyAV can open (wav, flac, mp3, ogg, m4a, a video's soundtrack),
streamed, resampled to mono float32 at the rate an audio tower reads. Shared by the indexer and
by audio queries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from jrsearch.retrieval.errors import FailureCode, MediaError

if TYPE_CHECKING:
    import av

CHUNK_S = 30.0  # seconds of samples per yielded chunk: bounds memory on hour-long files
MAX_QUERY_S = 600.0  # an audio query longer than this is cut


@dataclass(frozen=True)
class AudioChunk:
    start_s: float  # time of the first sample, from the start of the stream
    samples: np.ndarray  # (n,) float32 mono at the requested rate


def _open(path: Path | BinaryIO, subject: object = None) -> av.container.InputContainer:
    import av

    try:
        return av.open(str(path) if isinstance(path, Path) else path, mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(subject or path, f"not a media file PyAV can open ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def has_audio(path: Path) -> bool:
    container = _open(path)
    try:
        return bool(container.streams.audio)
    finally:
        container.close()


def iter_audio(path: Path | BinaryIO, sample_rate: int, chunk_s: float = CHUNK_S,
               opened: Callable[[av.container.InputContainer], None] | None = None,
               subject: object = None) -> Iterator[AudioChunk]:
    """Yield the first audio stream of `path` (or an open file) as consecutive mono chunks at
    `sample_rate`; `opened(container)` is called once the container is open (the indexer reads its
    tags there); errors name `subject` (default: `path`).

    Raises `MediaError` when the file cannot be opened, has no audio stream, or yields no
    samples at all. Data that stops decoding part way (a truncated or damaged file) ends the
    stream there: what decoded before is kept.
    """
    import av

    subject = subject or path
    container = _open(path, subject)
    try:
        if opened is not None:
            opened(container)
        if not container.streams.audio:
            raise MediaError(subject, "no audio stream", FailureCode.NO_CONTENT)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunk_len = max(1, int(chunk_s * sample_rate))
        pending: list[np.ndarray] = []
        held = 0
        emitted = 0
        for frames in _decoded(container, stream, resampler):
            for samples in frames:
                pending.append(samples)
                held += len(samples)
            while held >= chunk_len:
                buffer = np.concatenate(pending)
                yield AudioChunk(emitted / sample_rate, buffer[:chunk_len])
                emitted += chunk_len
                pending, held = [buffer[chunk_len:]], len(buffer) - chunk_len
        if held:
            yield AudioChunk(emitted / sample_rate, np.concatenate(pending))
            emitted += held
        if emitted == 0:
            raise MediaError(subject, "the audio stream holds no decodable samples", FailureCode.NO_CONTENT)
    finally:
        container.close()


def _decoded(container: av.container.InputContainer, stream: av.AudioStream,
             resampler: av.AudioResampler) -> Iterator[list[np.ndarray]]:
    """Resampled mono sample arrays, packet by packet; stops at the first undecodable data."""
    import av

    try:
        for packet in container.demux(stream):
            out: list[np.ndarray] = []
            for frame in packet.decode():
                frame.pts = None  # the resampler keeps its own clock; broken pts must not stop it
                out.extend(f.to_ndarray().reshape(-1).astype(np.float32, copy=False) for f in resampler.resample(frame))
            yield out
    except (av.error.FFmpegError, ValueError):
        pass  # truncated or damaged: keep what decoded
    with contextlib.suppress(av.error.FFmpegError, ValueError):
        yield [f.to_ndarray().reshape(-1).astype(np.float32, copy=False) for f in resampler.resample(None)]


def read_audio(path: Path, sample_rate: int, max_s: float = MAX_QUERY_S) -> np.ndarray:
    """A whole (short) sound as one mono float32 array at `sample_rate`, cut at `max_s`."""
    parts: list[np.ndarray] = []
    limit = int(max_s * sample_rate)
    total = 0
    for chunk in iter_audio(path, sample_rate):
        parts.append(chunk.samples[: limit - total])
        total += len(parts[-1])
        if total >= limit:
            break
    return np.concatenate(parts)
