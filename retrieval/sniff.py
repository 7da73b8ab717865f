"""What a file holds, by its bytes rather than its name: one table of signatures, one stream probe.

Used by the indexer (a JPEG named `.mp4` is an image; an `.mp4` holding only sound is a sound),
by the server (uploads, and the Content-Type of a file it serves), nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jrsearch.retrieval.types import MediaKind

if TYPE_CHECKING:
    import av

HEAD_BYTES = 16


@dataclass(frozen=True)
class Signature:
    kind: MediaKind
    mime: str
    suffix: str  # what to name a copy so that decoders that look at names agree


# ISO-BMFF major brands of HEIF still images and image sequences: the brands pillow-heif's opener
# accepts (`pillow_heif.as_plugin._is_supported_heif`), so that a phone's `.heic` is an image, not
# a QuickTime-like container PyAV would open. AVIF ("avif", "avis") is Pillow's own plugin's.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})


def is_heif(head: bytes) -> bool:
    """A HEIC/HEIF image by its first 12 bytes: an `ftyp` box with one of `HEIF_BRANDS` as major brand."""
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def _is_avif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis")


def _riff(form: bytes) -> Callable[[bytes], bool]:
    return lambda head: head[:4] == b"RIFF" and head[8:12] == form


SIGNATURES: list[tuple[bytes | Callable[[bytes], bool], Signature]] = [
    (b"\xff\xd8\xff", Signature(MediaKind.IMAGE, "image/jpeg", ".jpg")),
    (b"\x89PNG\r\n\x1a\n", Signature(MediaKind.IMAGE, "image/png", ".png")),
    (b"GIF87a", Signature(MediaKind.IMAGE, "image/gif", ".gif")),
    (b"GIF89a", Signature(MediaKind.IMAGE, "image/gif", ".gif")),
    (b"BM", Signature(MediaKind.IMAGE, "image/bmp", ".bmp")),
    (b"II*\x00", Signature(MediaKind.IMAGE, "image/tiff", ".tif")),
    (b"MM\x00*", Signature(MediaKind.IMAGE, "image/tiff", ".tif")),
    (_riff(b"WEBP"), Signature(MediaKind.IMAGE, "image/webp", ".webp")),
    (is_heif, Signature(MediaKind.IMAGE, "image/heic", ".heic")),
    (_is_avif, Signature(MediaKind.IMAGE, "image/avif", ".avif")),
    (_riff(b"WAVE"), Signature(MediaKind.AUDIO, "audio/wav", ".wav")),
    (b"fLaC", Signature(MediaKind.AUDIO, "audio/flac", ".flac")),
    (b"OggS", Signature(MediaKind.AUDIO, "audio/ogg", ".ogg")),
    (b"FORM", Signature(MediaKind.AUDIO, "audio/aiff", ".aiff")),
    (b"ID3", Signature(MediaKind.AUDIO, "audio/mpeg", ".mp3")),
    (lambda head: head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"),
     Signature(MediaKind.AUDIO, "audio/mpeg", ".mp3")),
]


def sniff(head: bytes) -> Signature | None:
    """The signature `head` (a file's first `HEAD_BYTES` bytes) starts with, if any."""
    for test, signature in SIGNATURES:
        if head.startswith(test) if isinstance(test, bytes) else test(head):
            return signature
    return None


def sniff_file(path: Path) -> Signature | None:
    try:
        with open(path, "rb") as handle:
            return sniff(handle.read(HEAD_BYTES))
    except OSError:
        return None


def picture_streams(container: av.container.InputContainer) -> list[av.VideoStream]:
    """A PyAV container's video streams that are moving pictures (not a sound file's cover art)."""
    import av

    attached = av.stream.Disposition.attached_pic
    return [s for s in container.streams.video if not s.disposition & attached]


def probe_kind(path: Path) -> MediaKind | None:
    """IMAGE for an image signature; else, by the container's streams, VIDEO (moving pictures) or
    AUDIO (sound only); None when neither the signatures nor PyAV recognise the file."""
    signature = sniff_file(path)
    if signature is not None and signature.mime != "audio/ogg":  # Ogg may hold Theora video: probe it
        return signature.kind
    import av

    try:
        with av.open(str(path)) as container:
            if picture_streams(container):
                return MediaKind.VIDEO
            return MediaKind.AUDIO if container.streams.audio else None
    except (av.error.FFmpegError, OSError, ValueError):
        return None
