"""Thumbnails: made once per file version and size, cached on disk as JPEG, EXIF-upright.

How a kind is pictured is its `KindInfo.picture` (looked up in `indexer/kinds.py`): a picture file (images)
goes through `retrieval.imageio.open_image` (by content, EXIF orientation, RGB, bomb limit);
pictures over time (videos) give the frame at the requested time; sounds the spectrogram of the
requested time range (`sound_picture.py`). The cache key is the item's
content hash (or its id, size and mtime), so a changed file gets a new thumbnail. A cache that
cannot be written (a full disk, a read-only library) costs speed, never the thumbnail: it is
served from memory, as a caching proxy (nginx's proxy_cache) serves a response it fails to store.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from jrsearch.indexer.handler import Picture
from jrsearch.indexer.kinds import kind_info
from jrsearch.retrieval.catalog import ItemRecord
from jrsearch.retrieval.errors import FailureCode, MediaError
from jrsearch.retrieval.fileio import write_bytes_atomic
from jrsearch.retrieval.imageio import open_image, upright_frame
from jrsearch.retrieval.sniff import picture_streams

SIZES = (128, 256, 512, 768)  # the page asks 256-768 by the card's width and the screen's pixel ratio (srcset)
QUALITY = 82
log = logging.getLogger("jrsearch.serve")


class ThumbnailCache:
    """JPEG thumbnails under `root`, one file per (file version, size[, video time])."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, item: ItemRecord, size: int, at_s: float | None = None, until_s: float | None = None) -> Path:
        key = item.content_hash or f"{item.id}-{item.size}-{item.mtime_ns}"
        when = (f"-t{at_s:.1f}" if at_s is not None else "") + (f"-u{until_s:.1f}" if until_s is not None else "")
        return self.root / key[:2] / f"{key}-{size}{when}.jpg"

    def get(self, item: ItemRecord, size: int, open_source: Callable[[], BinaryIO], at_s: float | None = None,
            until_s: float | None = None) -> bytes:
        """The thumbnail's JPEG bytes: from the cache, or made from the file `open_source()` opens
        and cached when the cache can be written. `at_s`: a video's time, or where a sound's range
        starts; `until_s`: where it ends (sounds only)."""
        picture = picture_of(item.kind)
        timed = picture in (Picture.FRAME, Picture.SOUND)
        at_s = round(at_s, 1) if timed and at_s is not None else None  # the cache keeps tenths of a second
        until_s = round(until_s, 1) if picture is Picture.SOUND and until_s is not None else None
        path = self.path_for(item, size, at_s, until_s)
        try:
            return path.read_bytes()
        except OSError:
            pass
        with open_source() as source:
            name = f"item {item.id}"
            if picture is Picture.FRAME:
                image = _video_frame(source, at_s or 0.0, name)
            elif picture is Picture.SOUND:
                from jrsearch.cli.web.sound_picture import sound_picture  # librosa: only when a sound is drawn

                image = sound_picture(source, at_s or 0.0, until_s, size, name)
            else:
                image = open_image(source.read(), name=name, draft_size=size)
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=QUALITY)
        try:
            write_bytes_atomic(path, out.getvalue())
        except OSError as exc:
            log.warning("thumbnail served without caching: cannot write %s (%s)", path, exc.strerror or exc)
        return out.getvalue()


def picture_of(kind: str) -> Picture | None:
    """How items of `kind` are pictured; None for a kind with no thumbnail (or no handler here)."""
    info = kind_info(kind)
    return info.picture if info else None


class NoPicture(MediaError):
    """The file holds no picture to make a thumbnail of (a sound-only video file)."""


def _video_frame(source: BinaryIO, at_s: float, name: str):
    """The first frame at or after `at_s` seconds, as an upright RGB PIL image."""
    import av

    try:
        with av.open(source) as container:
            streams = picture_streams(container)
            if not streams:
                raise NoPicture(name, "the file holds sound only, no pictures", FailureCode.NO_CONTENT)
            stream = streams[0]
            if at_s > 0 and stream.time_base:
                container.seek(int(at_s / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                if frame.time is None or frame.time >= at_s - 0.05:
                    return upright_frame(frame)
    except av.error.FFmpegError as exc:
        raise MediaError(name, f"the video could not be decoded (FFmpeg: {_first_line(exc)})") from None
    except (ValueError, OverflowError) as exc:
        raise MediaError(name, f"the video could not be decoded ({type(exc).__name__}: {_first_line(exc)})") from None
    raise MediaError(name, f"the video has no frame at {at_s:.1f} s", FailureCode.NO_CONTENT)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0][:160]


