"""Videos to vectors, streamed with PyAV so memory stays bounded however long the video is.

Frames are sampled at `IndexOptions.video_fps` (by timestamp, so variable frame rates are fine)
and at scene changes, embedded with the image tower in batches as they decode. The soundtrack is
decoded to mono at the audio tower's rate and embedded window by window.

What one video stores (all in the "video" index, so one search covers frames and sound):
  - one vector per sampled frame, modality "image", segment (its time, the next sample's time);
  - one pooled frame vector, modality "image", segment (0, duration);
  - with an audio tower: one vector per soundtrack window, modality "audio", with its time range,
    and one pooled soundtrack vector, modality "audio", segment (0, duration).
The audio tower maps into the image tower's space, so an audio query matches both a video's
frames and its sound, and a text query matches its frames (and, through that alignment, its
sound); the engine keeps each video's best-scoring vector and returns its time range.

Bad files: empty, unopenable (random bytes, truncated before the index), or with no decodable
stream are recorded as failed with the reason; a stream that breaks part way is indexed up to
where it broke; a file with no video stream is indexed by its sound when an audio tower exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jrsearch.indexer.audio import SoundVectors, decode_streamed, embed_sound, no_tower_note, with_pooled
from jrsearch.indexer.changes import Candidate
from jrsearch.indexer.commit import commit, stored_fields
from jrsearch.indexer.decode import Decoded
from jrsearch.indexer.handler import KindHandler, KindInfo, Picture
from jrsearch.indexer.run import IndexRun
from jrsearch.retrieval.encoders import AudioTower
from jrsearch.retrieval.encoders.audio import pool
from jrsearch.retrieval.errors import FailureCode, MediaError
from jrsearch.retrieval.imageio import upright_frame
from jrsearch.retrieval.library import VideoRecord
from jrsearch.retrieval.media_metadata import MediaMetadata, av_metadata
from jrsearch.retrieval.sniff import picture_streams
from jrsearch.retrieval.types import MediaKind

DEFAULT_FPS = 1.0
SCENE_THRESHOLD = 0.12  # mean absolute change of a 16x16 grey thumbnail (0..1) that marks a cut
MIN_SCENE_GAP_S = 0.25  # a cut closer than this to the previous sample is not sampled again
THUMB = 16
EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv",
                        ".3gp", ".ts"})


@dataclass(frozen=True)
class SampledFrame:
    time_s: float
    image: object  # PIL.Image, RGB, upright (the display matrix applied)
    scene_change: bool = False
    quarter_turned: bool = False  # shown a quarter turn from how it is stored (width and height swap)


@dataclass
class VideoVectors:
    vectors: np.ndarray
    segments: list[tuple[float, float]]
    modalities: list[str]
    duration_s: float
    width: int | None = None
    height: int | None = None
    notes: list[str] = field(default_factory=list)
    metadata: MediaMetadata | None = None  # date taken, place, camera (read from the same open)


def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
        raise MediaError(path, f"not a video PyAV can open ({text})") from None


def probe_duration(container) -> float | None:
    """Container duration in seconds, else the longest stream's, else None."""
    if container.duration:
        return container.duration / 1_000_000
    spans = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
    return max(spans) if spans else None


def _frame_time(frame, stream, index: int) -> float:
    start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
    if frame.pts is not None and frame.time_base is not None:
        return max(0.0, float(frame.pts * frame.time_base) - start)
    rate = float(stream.average_rate or 25)
    return index / rate


def iter_frames(container, fps: float = DEFAULT_FPS, scene_threshold: float = SCENE_THRESHOLD,
                image_side: int = 224, errors: list[str] | None = None) -> Iterator[SampledFrame]:
    """Frames of the first video stream at `fps` (by timestamp) plus scene changes, in order.

    Large frames are scaled down on decode (shorter side about twice `image_side`). Undecodable
    data ends the stream; the reason goes to `errors` when given.
    """
    import av

    stream = picture_streams(container)[0]
    stream.thread_type = "AUTO"
    period = 1.0 / fps if fps > 0 else float("inf")
    next_due = 0.0
    last_sample = -float("inf")
    previous = None
    try:
        for index, frame in enumerate(container.decode(stream)):
            t = _frame_time(frame, stream, index)
            thumb = frame.reformat(width=THUMB, height=THUMB, format="gray").to_ndarray().astype(np.float32) / 255
            cut = previous is not None and float(np.abs(thumb - previous).mean()) > scene_threshold
            previous = thumb
            due = t >= next_due - 1e-6
            if not (due or (cut and t - last_sample >= MIN_SCENE_GAP_S)):
                continue
            if due:
                next_due = (np.floor(t / period + 1e-6) + 1) * period
            last_sample = t
            yield SampledFrame(t, upright_frame(frame, 2 * image_side), scene_change=cut and not due,
                               quarter_turned=round(getattr(frame, "rotation", 0) / 90) % 2 == 1)
    except (av.error.FFmpegError, ValueError) as exc:
        if errors is not None:
            errors.append(f"video stream stopped decoding ({(str(exc) or type(exc).__name__).splitlines()[0][:120]})")


@dataclass
class FrameVectors:
    vectors: np.ndarray  # (n, dim) image-tower vectors of the sampled frames
    times: list[float]
    size: tuple[int, int] | None  # (width, height) as shown; None without a video stream
    duration: float | None  # the container's
    has_audio: bool  # the container holds an audio stream
    metadata: MediaMetadata | None = None  # the container's date taken, place, camera


def embed_frames(path: Path, encoder, fps: float, batch_size: int,
                 notes: list[str]) -> tuple[np.ndarray, list[float], tuple[int, int] | None, float | None]:
    """Frame vectors (n, dim) and their times, the frame size, and the container's duration."""
    frames = sampled_frames(path, encoder, fps, batch_size, notes)
    return frames.vectors, frames.times, frames.size, frames.duration


def sampled_frames(path: Path, encoder, fps: float, batch_size: int, notes: list[str]) -> FrameVectors:
    """`embed_frames`, and whether the container has sound, read from the same open."""
    container = _open(path)
    try:
        duration = probe_duration(container)
        has_audio = bool(container.streams.audio)
        if not picture_streams(container):
            return FrameVectors(np.zeros((0, encoder.dim), np.float32), [], None, duration, has_audio,
                                av_metadata(container, path))
        stream = picture_streams(container)[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        vectors: list[np.ndarray] = []
        times: list[float] = []
        batch: list = []
        quarter_turned = False
        for sample in iter_frames(container, fps, image_side=encoder.image_size, errors=notes):
            if not times and sample.quarter_turned:
                size = size[::-1]  # stored as shown: a portrait phone video is portrait
                quarter_turned = True
            batch.append(encoder.preprocess(sample.image))
            times.append(sample.time_s)
            if len(batch) == batch_size:
                vectors.append(encoder.encode_images(batch))
                batch = []
        if batch:
            vectors.append(encoder.encode_images(batch))
        metadata = av_metadata(container, path, quarter_turned=quarter_turned)
    finally:
        container.close()
    return FrameVectors(np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32), times, size,
                        duration, has_audio, metadata)


def frame_segments(times: list[float], duration: float) -> list[tuple[float, float]]:
    """Each sampled frame stands for the time until the next sample (the last: until the end)."""
    ends = [*times[1:], max(duration, times[-1])] if times else []
    return [(round(t, 3), round(e, 3)) for t, e in zip(times, ends, strict=True)]


def embed_video(path: Path, encoder, audio: AudioTower | None, fps: float = DEFAULT_FPS,
                batch_size: int = 64) -> VideoVectors:
    """Every vector one video stores (see the module docstring); `MediaError` when nothing decodes."""
    notes: list[str] = []
    sampled = sampled_frames(path, encoder, fps, batch_size, notes)
    frames, times, size, duration = sampled.vectors, sampled.times, sampled.size, sampled.duration
    sound: SoundVectors | None = None
    if audio is not None and sampled.has_audio:
        try:
            sound = embed_sound(path, audio)
        except MediaError as exc:
            notes.append(exc.reason)
    if not len(frames) and sound is None:
        if size is not None:
            raise MediaError(path, notes[0] if notes else "no decodable video frames", FailureCode.NO_CONTENT)
        raise MediaError(path, "no video stream",
                         FailureCode.NO_CONTENT if audio is not None else FailureCode.NEEDS_AUDIO_TOWER)
    duration = duration or max(times[-1] if times else 0.0, sound.duration_s if sound else 0.0)
    vectors, segments, modalities = [], [], []
    if len(frames):
        vectors += [frames, pool(frames)[None]]
        segments += [*frame_segments(times, duration), (0.0, round(duration, 3))]
        modalities += ["image"] * (len(frames) + 1)
    if sound is not None:
        sound = with_pooled(sound)
        vectors.append(sound.vectors)
        segments += [(round(s, 3), round(e, 3)) for s, e in sound.segments[:-1]] + [(0.0, round(duration, 3))]
        modalities += ["audio"] * len(sound.vectors)
    return VideoVectors(np.concatenate(vectors), segments, modalities, duration,
                        size[0] if size else None, size[1] if size else None, notes, sampled.metadata)


def decode_video(candidate: Candidate, encoder, audio: AudioTower | None, fps: float, batch_size: int) -> Decoded:
    def embed(path: Path, out: Decoded) -> None:
        video = embed_video(path, encoder, audio, fps, batch_size)
        out.vectors, out.segments, out.modalities = video.vectors, list(video.segments), video.modalities
        out.fields.update(width=video.width, height=video.height, duration_s=video.duration_s)
        out.metadata = video.metadata

    return decode_streamed(candidate, embed)


def video_record(decoded: Decoded) -> VideoRecord:
    return VideoRecord(**stored_fields(decoded), **decoded.fields, segments=decoded.segments,
                       modalities=decoded.modalities)


class VideoHandler(KindHandler):
    """Frames and soundtrack of each video, one commit per video. A video file holding only sound
    is a sound (checked by content)."""

    info = KindInfo(MediaKind.VIDEO, EXTENSIONS, picture=Picture.FRAME, by_content=True)

    def index(self, run: IndexRun, todo: list[Candidate]) -> None:
        options = run.options
        audio = run.towers.audio()
        unheard = 0  # videos indexed by their pictures alone although they hold sound
        for candidate in todo:
            decoded = decode_video(candidate, run.encoder, audio, options.video_fps, options.batch_size)
            commit(run, [decoded], video_record)
            if audio is None and decoded.vectors is not None and _holds_sound(candidate.path):
                unheard += 1
            run.progress.advance(1)
        if unheard:
            run.report.notes.append(no_tower_note(unheard, "video soundtrack"))

    def revisit(self, run: IndexRun, unchanged: list[Path]) -> list[Candidate]:
        """Re-embed unchanged videos that were indexed without sound, once an audio tower is there
        (`jrsearch index ./videos`, then `train audio`, then `index ./videos --audio-model t.pt`),
        and retry sound-only ones that failed for want of a tower. Videos with no audio stream are
        probed (headers only) and left alone."""
        if "audio" not in run.towers.modalities() or not unchanged:
            return []
        videos = set(map(str, unchanged))
        again = []
        with run.library.store.read() as catalog:
            waiting = catalog.to_revisit(MediaKind.VIDEO.value, FailureCode.NEEDS_AUDIO_TOWER.value, "audio")
        for path, size, mtime_ns in waiting:
            if path not in videos:
                continue
            if not _holds_sound(Path(path)):
                continue
            again.append(Candidate(Path(path), MediaKind.VIDEO, size, mtime_ns, known=None))  # no hash shortcut
        return again


VIDEOS = VideoHandler()


def _holds_sound(path: Path) -> bool:
    """Whether the video has an audio stream (headers only)."""
    from jrsearch.retrieval.audioio import has_audio

    try:
        return has_audio(path)
    except MediaError:
        return False


def windows_at(path: Path, times: list[float], sample_rate: int, window: int) -> np.ndarray:
    """(len(times), window) soundtrack windows centred on `times`, streamed (zeros past the ends)."""
    from jrsearch.retrieval.audioio import iter_audio

    out = np.zeros((len(times), window), dtype=np.float32)
    starts = np.round(np.asarray(times) * sample_rate).astype(np.int64) - window // 2
    for chunk in iter_audio(path, sample_rate):
        first = round(chunk.start_s * sample_rate)
        last = first + len(chunk.samples)
        for i in np.flatnonzero((starts < last) & (starts + window > first)):
            lo, hi = max(starts[i], first), min(starts[i] + window, last)
            out[i, lo - starts[i]:hi - starts[i]] = chunk.samples[lo - first:hi - first]
    return out


def video_pairs(path: Path, encoder, sample_rate: int, window: int, fps: float = DEFAULT_FPS,
                batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs from one video: (soundtrack windows centred on sampled frames, the frames'
    image-tower vectors). A video without sound or frames gives none; one that cannot be opened
    raises `MediaError`."""
    from jrsearch.retrieval.audioio import has_audio

    none = np.zeros((0, window), np.float32), np.zeros((0, encoder.dim), np.float32)
    if not has_audio(path):
        return none
    frames, times, _, _ = embed_frames(path, encoder, fps, batch_size, notes=[])
    if not len(frames):
        return none
    return windows_at(path, times, sample_rate, window), frames
