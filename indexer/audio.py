"""Sound files to vectors: one vector per window of the audio tower (with its time range) and one
pooled vector per file, all of kind "audio", modality "audio". Files are streamed, never read
whole, so a long recording costs one window batch of memory.

Without an audio tower (no `--audio-model`, none recorded in the library) sound files are
skipped and the report says how to index them; they are not failures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from indexer.changes import Candidate, hash_stream
from indexer.decode import Decoded
from retrieval.audioio import iter_audio
from retrieval.encoders.audio import AudioEncoder, pool
from retrieval.errors import MediaError

COMMIT_EVERY = 32  # sound files per store transaction
NO_TOWER_NOTE = ("{n} {what} skipped: no audio tower; train one with `jrsearch train audio DIR --out tower.pt` "
                 "(or use a Wav2CLIP checkpoint) and index with --audio-model tower.pt")


@dataclass
class SoundVectors:
    """A sound's window vectors, their time ranges, and its duration."""

    vectors: np.ndarray
    segments: list[tuple[float, float]] = field(default_factory=list)
    duration_s: float = 0.0


def hashed(candidate: Candidate) -> Decoded:
    """Hash a file in blocks (same digest as `changes.content_hash`) without holding it in memory."""
    try:
        with open(candidate.path, "rb") as handle:
            return Decoded(candidate, content_hash=hash_stream(handle))
    except OSError as exc:
        return Decoded(candidate, error=f"cannot read: {exc.strerror}")


def same_content(decoded: Decoded) -> bool:
    known = decoded.candidate.known
    return known is not None and known.status == "indexed" and known.content_hash == decoded.content_hash


def embed_sound(path: Path, audio: AudioEncoder) -> SoundVectors:
    """Stream `path`'s first audio stream through the tower, window by window."""
    chunk_s = audio.window_samples / audio.sample_rate * 30  # whole windows per chunk
    vectors, segments, samples = [], [], 0
    for chunk in iter_audio(path, audio.sample_rate, chunk_s=chunk_s):
        windows, spans = audio.windows(chunk.samples, chunk.start_s)
        vectors.append(audio.encode_windows(windows))
        segments.extend(spans)
        samples += len(chunk.samples)
    return SoundVectors(np.concatenate(vectors), segments, samples / audio.sample_rate)


def with_pooled(sound: SoundVectors) -> SoundVectors:
    """Append the pooled vector covering the whole sound (0, duration)."""
    return SoundVectors(np.concatenate([sound.vectors, pool(sound.vectors)[None]]),
                        sound.segments + [(0.0, sound.duration_s)], sound.duration_s)


def decode_streamed(candidate: Candidate, embed: Callable[[Path, Decoded], None]) -> Decoded:
    """Hash a file in blocks; unless its bytes are those already stored, `embed(path, out)` fills in
    the vectors. A `MediaError` marks the file failed with its reason."""
    if candidate.size == 0:
        return Decoded(candidate, error="empty file (0 bytes)")
    out = hashed(candidate)
    if out.error or same_content(out):
        return out
    try:
        embed(candidate.path, out)
    except MediaError as exc:
        out.error = str(exc).split(": ", 1)[-1]
    return out


def decode_sound_file(candidate: Candidate, audio: AudioEncoder) -> Decoded:
    def embed(path: Path, out: Decoded) -> None:
        sound = with_pooled(embed_sound(path, audio))
        out.vectors = sound.vectors
        out.extra = {"segments": sound.segments, "duration_s": sound.duration_s,
                     "modalities": ["audio"] * len(sound.vectors)}

    return decode_streamed(candidate, embed)


def index_sounds(library, encoder, todo: list[Candidate], options, report, progress) -> None:
    """`KIND_HANDLERS[MediaKind.AUDIO]`: embed sound files with the library's audio tower."""
    from indexer.pipeline import _commit
    from retrieval.audiomodel import library_audio_encoder

    audio = library_audio_encoder(library, options.audio_model)
    if audio is None:
        report.skipped += len(todo)
        report.notes.append(NO_TOWER_NOTE.format(n=len(todo), what="sound files"))
        progress.advance(len(todo))
        return
    batch: list[Decoded] = []
    for candidate in todo:
        batch.append(decode_sound_file(candidate, audio))
        if len(batch) == COMMIT_EVERY:
            _commit(library, batch, "audio", report)
            progress.advance(len(batch))
            batch = []
    if batch:
        _commit(library, batch, "audio", report)
        progress.advance(len(batch))
