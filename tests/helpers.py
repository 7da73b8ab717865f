"""What several test files share: data folders, media the tests make themselves (images; videos and
sounds with PyAV whose picture and tone change at known times, so indexed time ranges can be
checked), a served test library, and the CLI run in process. Fixtures live in conftest.py; test
files import helpers from here, never from each other or from conftest."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from typer.testing import Result

    from jrsearch.retrieval.library import Library

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COCO_DIR = SHARED_DATA / "coco-karpathy-test"
FSDD_DIR = SHARED_DATA / "fsdd" / "recordings"


# -- images ---------------------------------------------------------------------------------


def make_image(path: Path, seed: int, size=(96, 64), mode: str = "RGB", fmt: str | None = None) -> Path:
    """A distinct random-pattern image per seed (blocky, so it survives the model's resize)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    array = np.kron(blocks, np.ones((size[1] // 4, size[0] // 6, 1), dtype=np.uint8))
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def require_coco_images() -> Path:
    images = COCO_DIR / "images"
    if not images.is_dir():
        pytest.skip(f"real COCO images not found at {images} (the shared data folder is absent)")
    return images


# -- videos and sounds (PyAV) -----------------------------------------------------------


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


# -- a served library ---------------------------------------------------------------------


def write_video(path: Path, seconds: int = 4, fps: int = 8, codec: str = "mpeg4") -> Path:
    """A small video whose grey level rises with time (frame at t has level ~ 32 * t)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(seconds * fps):
            frame = np.full((48, 64, 3), min(255, i * 32 // fps), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def add_video(library: Library, path: Path, dim: int, vectors: np.ndarray | None = None) -> None:
    """Store a video item directly (segments 0-2 s and 2-4 s), as the video indexer would."""
    from jrsearch.retrieval.library import VideoRecord
    from jrsearch.retrieval.types import ItemStatus

    stat = path.stat()
    if vectors is None:
        vectors = np.random.default_rng(0).normal(size=(2, dim)).astype(np.float32)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    library.write([VideoRecord(path=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                               content_hash=None, status=ItemStatus.INDEXED, width=64, height=48, duration_s=4.0,
                               vectors=vectors, segments=[(0.0, 2.0), (2.0, 4.0)])])
    library.save_indexes()


def build_library(root: Path, encoder, n_images: int = 12) -> tuple[Library, Path]:
    """Twelve images (some in a subfolder), one EXIF-rotated, three captions and a video, indexed."""
    from PIL import Image

    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library

    media = root / "media"
    for i in range(n_images):
        make_image(media / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.jpg", seed=i)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 300x150 stored, 150x300 upright
    Image.new("RGB", (300, 150), "red").save(media / "rotated.jpg", exif=exif)
    (media / "captions.txt").write_text("a red square\na dog on a beach\nblue sky over the sea\n")
    library = Library.open(root / "lib", create=True)
    report = run_index(library, encoder, [media, media / "captions.txt"])
    assert not report.failed
    add_video(library, write_video(media / "clip.mp4"), encoder.dim)
    return Library.open(root / "lib"), media


def make_client(library: Library, encoder, **kwargs) -> TestClient:
    from fastapi.testclient import TestClient

    from jrsearch.cli.web.app import create_app
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.service import LibraryService

    engine = kwargs.pop("engine", None) or SearchEngine(library, encoder=encoder)
    service = LibraryService(library, engine, search_threads=kwargs.pop("search_threads", None))
    return TestClient(create_app(service, **kwargs), raise_server_exceptions=False)


def item_id(library: Library, path: Path) -> int:
    item = library.item_at(str(path))
    assert item is not None
    return item.id


# -- the CLI, in process ----------------------------------------------------------------------


def jrsearch(*args: str, lib: Path, ok: bool = True) -> Result:
    """`jrsearch ARGS --library LIB` through typer's runner; asserts it succeeded unless `ok=False`."""
    from typer.testing import CliRunner

    from jrsearch.cli.main import app

    result = CliRunner().invoke(app, [*args, "--library", str(lib)], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def dms(value: float) -> tuple:
    from PIL import TiffImagePlugin

    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return (TiffImagePlugin.IFDRational(degrees), TiffImagePlugin.IFDRational(minutes),
            TiffImagePlugin.IFDRational(round(seconds * 1000), 1000))


def exif_photo(path: Path, seed: int, taken: str | None = None, offset: str | None = None,
               place: tuple[float, float] | None = None, camera: tuple[str, str] | None = None,
               **image: Any) -> Path:
    """A JPEG with real EXIF written by Pillow: DateTimeOriginal (+ OffsetTimeOriginal), the GPS IFD,
    Make and Model, each where given."""
    from PIL import Image

    make_image(path, seed, **image)
    with Image.open(path) as opened:
        image = opened.copy()
    exif = Image.Exif()
    if camera:
        exif[0x010F], exif[0x0110] = camera
    if taken:
        sub = exif.get_ifd(0x8769)
        sub[0x9003] = taken
        if offset:
            sub[0x9011] = offset
    if place:
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = ("N" if place[0] >= 0 else "S"), dms(place[0])
        gps[3], gps[4] = ("E" if place[1] >= 0 else "W"), dms(place[1])
    image.save(path, exif=exif)
    return path


def clustered(n: int, dim: int, centres: int, seed: int = 0, spread: float = 0.5) -> np.ndarray:
    """n unit vectors around `centres` random means: neighbourhoods like real embeddings have."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)).astype(np.float32)
    vectors = means[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
