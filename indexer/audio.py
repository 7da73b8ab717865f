"""Sound files to vectors: one vector per window of the audio tower (with its time range) and one
pooled vector per file, all of kind "audio", modality "audio". Files are streamed, never read
whole, so a long recording costs one window batch of memory.

Without an audio tower (no `--audio-model`, none recorded in the library) sound files are
skipped and the report says how to index them; they are not failures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jrsearch.indexer.changes import Candidate
from jrsearch.indexer.commit import commit, stored_fields
from jrsearch.indexer.decode import Decoded, failed, same_content
from jrsearch.indexer.handler import KindHandler, KindInfo, Picture
from jrsearch.indexer.run import IndexRun
from jrsearch.retrieval.audioio import iter_audio
from jrsearch.retrieval.encoders import AudioTower
from jrsearch.retrieval.encoders.audio import pool
from jrsearch.retrieval.errors import FailureCode, MediaError
from jrsearch.retrieval.hashing import hash_stream
from jrsearch.retrieval.library import SoundRecord
from jrsearch.retrieval.media_metadata import av_metadata
from jrsearch.retrieval.types import MediaKind

COMMIT_EVERY = 32  # sound files per store transaction
EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aiff",
                        ".aif"})


def no_tower_note(n: int, noun: str) -> str:
    """The report's note on `n` files (or soundtracks) whose sound waits for an audio tower."""
    return (f"{n} {noun}{'' if n == 1 else 's'} skipped: no audio tower; train one with `jrsearch train audio DIR "
            f"--out tower.pt` (or use a Wav2CLIP checkpoint) and index with --audio-model tower.pt")


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
        return failed(candidate, f"cannot read: {exc.strerror}", FailureCode.UNREADABLE)


def embed_sound(path: Path, audio: AudioTower, opened: Callable[[Any], None] | None = None) -> SoundVectors:
    """Stream `path`'s first audio stream through the tower, window by window; `opened(container)`
    once the container is open."""
    chunk_s = audio.window_samples / audio.sample_rate * 30  # whole windows per chunk
    vectors, segments, samples = [], [], 0
    for chunk in iter_audio(path, audio.sample_rate, chunk_s=chunk_s, opened=opened):
        windows, spans = audio.windows(chunk.samples, chunk.start_s)
        vectors.append(audio.encode("audio", windows))
        segments.extend(spans)
        samples += len(chunk.samples)
    return SoundVectors(np.concatenate(vectors), segments, samples / audio.sample_rate)


def with_pooled(sound: SoundVectors) -> SoundVectors:
    """Append the pooled vector covering the whole sound (0, duration)."""
    return SoundVectors(np.concatenate([sound.vectors, pool(sound.vectors)[None]]),
                        [*sound.segments, (0.0, sound.duration_s)], sound.duration_s)


def decode_streamed(candidate: Candidate, embed: Callable[[Path, Decoded], None]) -> Decoded:
    """Hash a file in blocks; unless its bytes are those already stored, `embed(path, out)` fills in
    the vectors. A `MediaError` marks the file failed with its reason."""
    if candidate.size == 0:
        return failed(candidate, "empty file (0 bytes)", FailureCode.EMPTY)
    out = hashed(candidate)
    if out.failure or same_content(out):
        return out
    try:
        embed(candidate.path, out)
    except MediaError as exc:
        out.failure = exc
    return out


def decode_sound_file(candidate: Candidate, audio: AudioTower) -> Decoded:
    def embed(path: Path, out: Decoded) -> None:
        def read_metadata(container: Any) -> None:  # from the container the sound is decoded from
            out.metadata = av_metadata(container, path, mtime_ns=candidate.mtime_ns)

        sound = with_pooled(embed_sound(path, audio, read_metadata))
        out.vectors, out.fields["duration_s"] = sound.vectors, sound.duration_s
        out.segments = list(sound.segments)
        out.modalities = ["audio"] * len(sound.vectors)

    return decode_streamed(candidate, embed)


def sound_record(decoded: Decoded) -> SoundRecord:
    return SoundRecord(**stored_fields(decoded), **decoded.fields, segments=decoded.segments,
                       modalities=decoded.modalities)


class SoundHandler(KindHandler):
    """Sound files, embedded with the library's audio tower (skipped, with a note, without one).
    A sound file holding moving pictures is a video (checked by content)."""

    info = KindInfo(MediaKind.AUDIO, EXTENSIONS, picture=Picture.SOUND, by_content=True)

    def index(self, run: IndexRun, todo: list[Candidate]) -> None:
        audio = run.towers.audio()
        if audio is None:
            run.report.skipped += len(todo)
            run.report.notes.append(no_tower_note(len(todo), "sound file"))
            run.progress.advance(len(todo))
            return
        for start in range(0, len(todo), COMMIT_EVERY):
            batch = [decode_sound_file(c, audio) for c in todo[start:start + COMMIT_EVERY]]
            commit(run, batch, sound_record)
            run.progress.advance(len(batch))


SOUNDS = SoundHandler()
