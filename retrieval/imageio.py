"""Opening images safely: by content not extension, EXIF-upright, RGB, bounded in size."""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from jrsearch.retrieval.errors import FailureCode, MediaError
from jrsearch.retrieval.sniff import is_heif

if TYPE_CHECKING:
    import av
    from PIL import Image

MAX_PIXELS = 90_000_000  # above this an image is treated as a decompression bomb
# Longest side over shortest side kept: a longer image is centre-cropped along its long side, so
# resizing its short side to the model's input never builds a huge strip (a 240-byte 1x40000 PNG
# became 64x2,560,000 px, ~0.8 GB). What CLIP's centre crop sees (the middle square) is kept.
MAX_ASPECT = 16
REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"})  # what Image.reduce takes

_heif_lock = threading.Lock()
_heif_state: list[bool] = []  # [True] once pillow-heif's opener is registered, [False] when it is not installed


def register_heif() -> bool:
    """Teach Pillow HEIC/HEIF (phone cameras' default format) through pillow-heif, once per process;
    False when pillow-heif is not installed. Lazy: importing pillow-heif and registering it took
    35-41 ms here (libheif loads), which no text query needs."""
    if _heif_state:
        return _heif_state[0]
    with _heif_lock:
        if not _heif_state:
            try:
                import pillow_heif
            except ImportError:
                _heif_state.append(False)
            else:
                # the images only: no thumbnails, depth maps or auxiliary (HDR gain map) images listed
                pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
                _heif_state.append(True)
    return _heif_state[0]


def open_image(source: Path | bytes, name: str | None = None, draft_size: int | None = None) -> Image.Image:
    """Decode an image to an upright RGB `PIL.Image`, or raise `MediaError` saying why.

    `draft_size` lets JPEG decode at a reduced scale (still >= that size), and any other format
    be reduced right after decoding (`Image.reduce`, short side kept >= 2 x that size): much
    faster for photos that will be resized to the model's input anyway. An image longer than
    `MAX_ASPECT` times its width (or the reverse) is centre-cropped to that ratio. The
    full-resolution upright (width, height) stays available as `image.info["full_size"]`.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    label = name or str(source if isinstance(source, Path) else "image")
    data = source.read_bytes() if isinstance(source, Path) else source
    if not data:
        raise MediaError(label, "empty file (0 bytes)", FailureCode.EMPTY)
    if is_heif(data[:12]) and not register_heif():
        raise MediaError(label, "a HEIC/HEIF image, and pillow-heif (which reads them) is not installed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            image: Image.Image = Image.open(io.BytesIO(data))  # to_rgb's result is a plain Image
            full_size = image.size
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            upright = ImageOps.exif_transpose(image)
            if (upright.width > upright.height) != (image.width > image.height):
                full_size = full_size[::-1]  # rotated by its EXIF orientation
            image = to_rgb(_aspect_capped(_reduced(upright, draft_size)))
            image.info["full_size"] = full_size
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(label, f"image too large (over {MAX_PIXELS:,} pixels, possible decompression bomb)",
                         FailureCode.TOO_LARGE) from None
    except UnidentifiedImageError:
        raise MediaError(label, "not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise MediaError(label, f"corrupt or truncated image ({exc})") from None


def _reduced(image: Image.Image, draft_size: int | None) -> Image.Image:
    """A large image shrunk by a whole factor (a box filter, cheap) to a short side of at least
    2 x `draft_size`: what the model's resize then reads is a fraction of the pixels."""
    factor = min(image.size) // (2 * draft_size) if draft_size else 0
    if factor < 2 or image.mode not in REDUCIBLE_MODES:
        return image
    spare_x, spare_y = image.width % factor, image.height % factor  # whole blocks only, centred
    reduced = image.reduce(factor, box=(spare_x // 2, spare_y // 2, image.width - (spare_x - spare_x // 2),
                                        image.height - (spare_y - spare_y // 2)))
    reduced.info = image.info  # EXIF (orientation, date taken) stays with the picture
    return reduced


def _aspect_capped(image: Image.Image) -> Image.Image:
    """The middle of an image longer than `MAX_ASPECT` times its short side, cut to that ratio."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if long <= short * MAX_ASPECT:
        return image
    keep = short * MAX_ASPECT
    start = (long - keep) // 2
    box = (start, 0, start + keep, height) if width > height else (0, start, width, start + keep)
    cropped = image.crop(box)
    cropped.info = image.info
    return cropped


QUARTER_TURNS = (None, "ROTATE_90", "ROTATE_180", "ROTATE_270")  # counter-clockwise, as PIL names them


def upright_frame(frame: av.VideoFrame, max_short_side: int | None = None) -> Image.Image:
    """A PyAV video frame as an upright RGB `PIL.Image`.

    Turned as the stream's display matrix says (phones store portrait video as landscape frames
    plus a rotation; players, and ffmpeg's autorotate, apply it), and scaled down on the way so
    that its shorter side is at most `max_short_side`.
    """
    from PIL import Image

    short = min(frame.width, frame.height)
    if max_short_side and short > max_short_side:
        scale = max_short_side / short
        frame = frame.reformat(width=max(1, round(frame.width * scale)), height=max(1, round(frame.height * scale)))
    image = to_rgb(frame.to_image())
    turn = QUARTER_TURNS[round(getattr(frame, "rotation", 0) / 90) % 4]  # degrees counter-clockwise
    return image.transpose(getattr(Image.Transpose, turn)) if turn else image


def to_rgb(image: Image.Image) -> Image.Image:
    """Palette, RGBA/LA (composited on white), CMYK, 16-bit and greyscale -> 8-bit RGB."""
    import numpy as np
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).clip(0, 255).astype("uint8"), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")
