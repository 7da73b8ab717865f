"""What a photo, video or sound says about itself: when it was taken, where, with what camera, its
upright size and its length. Read at index time from the file the indexer has already opened.

- Images (`image_metadata`): EXIF through Pillow (JPEG, TIFF, WebP, PNG, and HEIC/HEIF once
  pillow-heif's opener is registered, see `retrieval.imageio.register_heif`).
  Date taken: DateTimeOriginal with OffsetTimeOriginal, else DateTimeDigitized with
  OffsetTimeDigitized, else IFD0 DateTime with OffsetTime (phones such as the Nokia 8.3 write only
  that one). GPS from the GPS IFD, camera from IFD0 Make/Model, size after the EXIF orientation.
- Videos and sounds (`av_metadata`): the container's (or a stream's) creation time through PyAV,
  Apple's `com.apple.quicktime.creationdate` first (it keeps the local offset), ISO 6709 location,
  Apple/Android make and model tags, the duration.
- Anything else, or nothing readable: the file's modification time, `taken_source == "mtime"`.

Every value a file gives is checked: a malformed one (wrong type, a rational over zero, bytes where
text belongs, GPS out of range, "0000:00:00 00:00:00") becomes None for that field. Reading never
raises: a field whose parser fails for any reason is None, and Pillow's own EXIF errors are caught.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import av.container
    from PIL import Image

TakenSource = Literal["exif", "container", "mtime"]
T = TypeVar("T")

MAX_TEXT = 256  # a Make or Model longer than this is not a camera's name: None
MIN_YEAR = 1800  # earlier dates are a camera's unset clock or garbage, not a photo's date
MAX_OFFSET = timedelta(hours=14)  # the widest UTC offset in use (Kiribati)
EPOCH_SENTINELS = {datetime(1904, 1, 1), datetime(1970, 1, 1)}  # QuickTime's and Unix's zero: unset

# EXIF tag numbers (Pillow's `ExifTags.Base` / `ExifTags.GPS` names them; numbers keep PIL off import)
MAKE, MODEL, ORIENTATION, DATE_TIME = 0x010F, 0x0110, 0x0112, 0x0132
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATE_ORIGINAL, DATE_DIGITIZED = 0x9003, 0x9004
OFFSET_TIME, OFFSET_ORIGINAL, OFFSET_DIGITIZED = 0x9010, 0x9011, 0x9012
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4

# SQLite column types for `to_fields()`'s keys, for whoever adds the columns
SQL_COLUMNS: dict[str, str] = {
    "taken_at": "TEXT",  # ISO 8601 with its offset, e.g. 2021-04-11T15:47:53-05:00
    "taken_ts": "REAL",  # the same instant as POSIX seconds: sort and range-filter on this
    "taken_source": "TEXT",
    "taken_naive": "INTEGER",
    "latitude": "REAL",
    "longitude": "REAL",
    "camera_make": "TEXT",
    "camera_model": "TEXT",
    "width": "INTEGER",
    "height": "INTEGER",
    "duration_s": "REAL",
}


@dataclass(frozen=True)
class MediaMetadata:
    """One file's metadata; every field None (`taken_naive` False) when nothing is known.

    `taken_at` is always timezone-aware when set. When the file recorded a wall-clock time without
    a UTC offset (EXIF without OffsetTime*), that wall clock is read as the indexing machine's
    local time and `taken_naive` is True: `taken_at.replace(tzinfo=None)` is what the camera's
    clock showed, the offset is a guess.
    """

    taken_at: datetime | None = None
    taken_source: TakenSource | None = None
    taken_naive: bool = False
    latitude: float | None = None
    longitude: float | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None

    def to_fields(self) -> dict[str, Any]:
        """JSON-able values keyed as `SQL_COLUMNS`: dates as ISO 8601 text plus `taken_ts`."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["taken_at"] = self.taken_at.isoformat() if self.taken_at else None
        out["taken_ts"] = self.taken_at.timestamp() if self.taken_at else None
        return out

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> MediaMetadata:
        """The inverse of `to_fields` (missing keys are None; `taken_ts` is derived, ignored)."""
        taken = values.get("taken_at")
        source = values.get("taken_source")
        return cls(
            taken_at=_guard(lambda: datetime.fromisoformat(taken)) if isinstance(taken, str) and taken else None,
            taken_source=source if source in ("exif", "container", "mtime") else None,
            taken_naive=bool(values.get("taken_naive")),
            latitude=_number(values.get("latitude")),
            longitude=_number(values.get("longitude")),
            camera_make=_text(values.get("camera_make")),
            camera_model=_text(values.get("camera_model")),
            width=_dimension(values.get("width")),
            height=_dimension(values.get("height")),
            duration_s=_number(values.get("duration_s")),
        )


# ---------------------------------------------------------------- value parsers: never raise


def _guard(read: Callable[[], T]) -> T | None:
    """`read()`, or None when it raises anything at all: hostile files break parsers in ways no
    list of exception types foresees (Pillow's EXIF reader has raised TypeError, struct.error,
    MemoryError, IndexError, ...); one field lost is better than a file lost."""
    try:
        return read()
    except Exception:
        return None


def _number(value: object) -> float | None:
    """A finite float from an int, float, Fraction or Pillow `IFDRational` (x/0 is nan there)."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _dimension(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 31 else None


def _text(value: object) -> str | None:
    """A tag's text: stripped of NULs and blanks; None when empty, not text (bytes that are not
    UTF-8, replacement characters, control characters) or absurdly long."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    value = value.strip("\x00 \t\r\n")
    if "\x00" in value:
        value = value.split("\x00", 1)[0].rstrip()
    ok = value and len(value) <= MAX_TEXT and value.isprintable() and "\ufffd" not in value
    return value if ok else None


DATE_RE = re.compile(r"\s*(\d{4})[:\-/](\d{2})[:\-/](\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,]\d+)?\s*"
                     r"(Z|[+-]\d{2}:?\d{2})?")
OFFSET_RE = re.compile(r"\s*(Z|[+-]\d{2}:?\d{2})\s*$")


def _offset(value: object) -> tzinfo | None:
    """An offset such as "+01:00", "-0500" or "Z" as a fixed timezone; None for blanks ("   :  ")
    and impossible ones."""
    text = _text(value)
    match = OFFSET_RE.match(text) if text else None
    if match is None:
        return None
    if match[1] == "Z":
        return timezone.utc
    sign = -1 if match[1][0] == "-" else 1
    digits = match[1][1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return timezone(sign * delta) if delta <= MAX_OFFSET and int(digits[2:]) < 60 else None


def _parse_date(value: object) -> tuple[datetime, tzinfo | None] | None:
    """EXIF "2008:10:22 16:29:49" or ISO "2024-05-01T10:00:00.000000Z": the wall clock and the
    offset written with it, if any; None for blanks, zeros and impossible dates."""
    text = _text(value)
    match = DATE_RE.match(text) if text else None
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
        naive = datetime(year, month, day, hour, minute, second)
    except ValueError:  # month 0, day 32, hour 24, ...
        return None
    if naive.year < MIN_YEAR or naive in EPOCH_SENTINELS:
        return None
    return naive, _offset(match[7]) if match[7] else None


def _aware(naive: datetime, offset: tzinfo | None) -> tuple[datetime, bool] | None:
    """(`taken_at`, `taken_naive`): with its offset, else the wall clock read as local time."""
    if offset is not None:
        return naive.replace(tzinfo=offset), False
    try:
        return naive.astimezone(), True  # a naive datetime's astimezone() takes it as local time
    except (OverflowError, OSError, ValueError):
        return None


def _mtime(path: Path, mtime_ns: int | None) -> datetime | None:
    try:
        seconds = mtime_ns / 1e9 if mtime_ns is not None else path.stat().st_mtime
        return datetime.fromtimestamp(seconds, timezone.utc).astimezone()
    except (OSError, OverflowError, ValueError):
        return None


# ---------------------------------------------------------------- images


def _exif_taken(exif: Mapping[int, Any], sub: Mapping[int, Any]) -> tuple[datetime, bool] | None:
    """The first valid of DateTimeOriginal, DateTimeDigitized (Exif IFD) and DateTime (IFD0),
    each with its own OffsetTime* tag."""
    for date_tag, offset_tag, ifd in ((DATE_ORIGINAL, OFFSET_ORIGINAL, sub), (DATE_DIGITIZED, OFFSET_DIGITIZED, sub),
                                      (DATE_TIME, OFFSET_TIME, exif)):
        parsed = _guard(lambda ifd=ifd, tag=date_tag: _parse_date(ifd.get(tag)))  # type: ignore[misc]
        if parsed is None:
            continue
        naive, written = parsed
        offset = _guard(lambda tag=offset_tag: _offset(sub.get(tag))) or written  # type: ignore[misc]
        taken = _aware(naive, offset)
        if taken is not None:
            return taken
    return None


def _gps_coordinate(value: object, ref: object, limit: float, negative: str) -> float | None:
    """Degrees, minutes, seconds (rationals; one or two parts also occur) and a N/S or E/W ref."""
    parts = list(value) if isinstance(value, (tuple, list)) else [value]
    numbers = [_number(part) for part in parts[:3]]
    if not numbers or any(n is None or n < 0 for n in numbers):
        return None
    degrees = sum(n / 60**i for i, n in enumerate(numbers) if n is not None)
    if degrees > limit:
        return None
    ref_text = (_text(ref) or "").upper()[:1]
    return -degrees if ref_text == negative else degrees


def _exif_gps(gps: Mapping[int, Any]) -> tuple[float | None, float | None]:
    """Latitude and longitude, both or neither; (0, 0), what GPS-less cameras write, is neither."""
    lat = _guard(lambda: _gps_coordinate(gps.get(GPS_LAT), gps.get(GPS_LAT_REF), 90.0, "S"))
    lon = _guard(lambda: _gps_coordinate(gps.get(GPS_LON), gps.get(GPS_LON_REF), 180.0, "W"))
    if lat is None or lon is None or (lat == 0 and lon == 0):
        return None, None
    return lat, lon


def _exif_ifds(image: Image.Image) -> tuple[Mapping[int, Any], Mapping[int, Any], Mapping[int, Any]]:
    """IFD0, the Exif IFD and the GPS IFD as Pillow reads them; empty where unreadable."""
    exif = _guard(image.getexif)
    if exif is None:
        return {}, {}, {}
    sub = _guard(lambda: exif.get_ifd(EXIF_IFD)) or {}
    gps = _guard(lambda: exif.get_ifd(GPS_IFD)) or {}
    return exif, sub, gps


def _upright_size(image: Image.Image, exif: Mapping[int, Any]) -> tuple[int | None, int | None]:
    """Width and height as displayed. `retrieval.imageio.open_image` leaves the full upright size
    in `info["full_size"]` (its image may be a reduced JPEG draft); otherwise the image is as
    stored and orientations 5-8 (a quarter turn) swap its sides. pillow-heif turns HEIF images
    itself and resets the tag to 1."""
    full = image.info.get("full_size")
    if isinstance(full, tuple) and len(full) == 2:
        return _dimension(full[0]), _dimension(full[1])
    width, height = _dimension(image.width), _dimension(image.height)
    orientation = _guard(lambda: exif.get(ORIENTATION))
    if isinstance(orientation, int) and 5 <= orientation <= 8:
        return height, width
    return width, height


def image_metadata(image: Image.Image, path: Path, *, mtime_ns: int | None = None) -> MediaMetadata:
    """Metadata of an image already opened by Pillow (`Image.open`, or `open_image`'s result, which
    keeps the EXIF), so the file is read once. No date in the EXIF: the file's mtime (`mtime_ns`
    when the caller has it, else `path` is stat'ed). Never raises."""
    exif, sub, gps = _exif_ifds(image)
    width, height = _guard(lambda: _upright_size(image, exif)) or (None, None)
    latitude, longitude = _exif_gps(gps)
    taken = _exif_taken(exif, sub)
    source: TakenSource | None = "exif" if taken else None
    if taken is None:
        when = _mtime(path, mtime_ns)
        taken, source = ((when, False), "mtime") if when else (None, None)
    return MediaMetadata(
        taken_at=taken[0] if taken else None, taken_source=source, taken_naive=taken[1] if taken else False,
        latitude=latitude, longitude=longitude,
        camera_make=_guard(lambda: _text(exif.get(MAKE))), camera_model=_guard(lambda: _text(exif.get(MODEL))),
        width=width, height=height)


# ---------------------------------------------------------------- videos and sounds

CREATION_KEYS = ("com.apple.quicktime.creationdate", "creation_time", "date_recorded", "date")
LOCATION_KEYS = ("com.apple.quicktime.location.iso6709", "location", "location-eng")
MAKE_KEYS = ("com.apple.quicktime.make", "com.android.manufacturer", "make")
MODEL_KEYS = ("com.apple.quicktime.model", "com.android.model", "model")
ISO6709_RE = re.compile(r"\s*([+-]\d{2}(?:\.\d+)?)([+-]\d{3}(?:\.\d+)?)")


def _first(tags: Iterable[Mapping[str, str]], keys: Iterable[str], parse: Callable[[str], T | None]) -> T | None:
    """The first key, in `keys` order, whose value in any of `tags` parses."""
    tag_list = list(tags)
    for key in keys:
        for mapping in tag_list:
            if key in mapping:
                value = _guard(lambda key=key, mapping=mapping: parse(mapping[key]))  # type: ignore[misc]
                if value is not None:
                    return value
    return None


def _iso6709(text: str) -> tuple[float, float] | None:
    """An ISO 6709 location such as "+43.4670+011.8850+100.000/" (decimal degrees, as phones write it)."""
    match = ISO6709_RE.match(text)
    if match is None:
        return None
    lat, lon = float(match[1]), float(match[2])
    if abs(lat) > 90 or abs(lon) > 180 or (lat == 0 and lon == 0):
        return None
    return lat, lon


def _av_tags(container: av.container.InputContainer) -> list[Mapping[str, str]]:
    """The container's metadata, then each stream's, keys lower-cased."""
    mappings = [container.metadata, *(stream.metadata for stream in container.streams)]
    return [{str(k).lower(): v for k, v in mapping.items()} for mapping in mappings]


def _av_duration(container: av.container.InputContainer) -> float | None:
    """The container's duration (in AV_TIME_BASE units), else its longest stream's."""
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    lengths = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
    return max(lengths) if lengths else None


def _av_size(container: av.container.InputContainer, quarter_turned: bool) -> tuple[int | None, int | None]:
    from jrsearch.retrieval.sniff import picture_streams

    streams = picture_streams(container)
    if not streams:
        return None, None
    width, height = _dimension(streams[0].codec_context.width), _dimension(streams[0].codec_context.height)
    return (height, width) if quarter_turned else (width, height)


def _av_fields(container: av.container.InputContainer, quarter_turned: bool) -> dict[str, Any]:
    tags = _guard(lambda: _av_tags(container)) or []
    parsed = _first(tags, CREATION_KEYS, _parse_date)
    taken = _aware(*parsed) if parsed else None
    location = _first(tags, LOCATION_KEYS, _iso6709)
    duration = _number(_guard(lambda: _av_duration(container)))
    width, height = _guard(lambda: _av_size(container, quarter_turned)) or (None, None)
    return {"taken_at": taken[0] if taken else None, "taken_source": "container" if taken else None,
            "taken_naive": taken[1] if taken else False,
            "latitude": location[0] if location else None, "longitude": location[1] if location else None,
            "camera_make": _first(tags, MAKE_KEYS, _text), "camera_model": _first(tags, MODEL_KEYS, _text),
            "width": width, "height": height,
            "duration_s": duration if duration is not None and duration >= 0 else None}


def av_metadata(container_or_path: av.container.InputContainer | Path | str, path: Path, *,
                quarter_turned: bool = False, mtime_ns: int | None = None) -> MediaMetadata:
    """Metadata of a video or sound: an open PyAV input container (the indexer's, left open), or a
    path it opens and closes itself. `quarter_turned`: the stream's display matrix turns it by 90
    or 270 degrees (the indexer knows it from its first frame's `rotation`), so width and height
    swap. No creation time: the file's mtime. Never raises."""
    values: dict[str, Any] = {}
    if isinstance(container_or_path, (Path, str)):
        import av

        try:
            with av.open(str(container_or_path)) as container:
                values = _av_fields(container, quarter_turned)
        except Exception:  # not a container PyAV reads, or unreadable: mtime alone
            values = {}
    else:
        values = _guard(lambda: _av_fields(container_or_path, quarter_turned)) or {}
    if values.get("taken_at") is None:
        when = _mtime(path, mtime_ns)
        values.update(taken_at=when, taken_source="mtime" if when else None, taken_naive=False)
    return MediaMetadata(**values)


# ---------------------------------------------------------------- files, for a migration


def file_metadata(path: Path) -> MediaMetadata | None:
    """Metadata of a file read afresh (for a migration that fills in files indexed before): opens
    the image (headers only, no pixels decoded) or the container itself. None when the file is
    missing or unreadable; a file neither Pillow nor PyAV reads gets its mtime alone. Never raises."""
    try:
        mtime_ns = path.stat().st_mtime_ns
        with open(path, "rb"):
            pass
    except (OSError, ValueError):
        return None
    from jrsearch.retrieval.imageio import register_heif
    from jrsearch.retrieval.sniff import sniff_file

    register_heif()
    signature = _guard(lambda: sniff_file(path))
    if signature is None or signature.kind == "image":
        found = _guard(lambda: _pillow_metadata(path, mtime_ns))
        if found is not None:
            return found
    return av_metadata(path, path, mtime_ns=mtime_ns)


def _pillow_metadata(path: Path, mtime_ns: int) -> MediaMetadata | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image_metadata(image, path, mtime_ns=mtime_ns)
    except Exception:  # not an image Pillow reads (or a decompression bomb): None, PyAV is asked next
        return None
