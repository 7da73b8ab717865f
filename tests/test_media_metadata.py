"""Metadata at index time (`retrieval/media_metadata.py`) and HEIC/HEIF photos, on real camera files
(the shared exif-samples) and on EXIF, videos and hostile blobs the tests write themselves."""

from __future__ import annotations

import json
import math
import os
import struct
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, make_image

from jrsearch.retrieval.media_metadata import (
    SQL_COLUMNS,
    MediaMetadata,
    av_metadata,
    file_metadata,
    image_metadata,
)

SAMPLES = SHARED_DATA / "exif-samples"
AREZZO = (43.467, 11.885)


def require_samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"real camera files not found at {SAMPLES} (the shared data folder is absent)")
    return SAMPLES


def km_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def sample_files(*folders: str) -> list[Path]:
    root = require_samples()
    return sorted(p for folder in folders for p in (root / folder).rglob("*")
                  if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".heic", ".heif"))


# ---------------------------------------------------------------- the shared camera files


def test_arezzo_gps_photos():
    photos = sample_files("jpg/gps")
    assert len(photos) == 9
    for path in photos:
        meta = file_metadata(path)
        assert meta is not None and meta.latitude is not None and meta.longitude is not None, path.name
        assert km_between((meta.latitude, meta.longitude), AREZZO) < 1.0, (path.name, meta)
        assert meta.taken_source == "exif" and meta.taken_at is not None
        assert meta.taken_at.replace(tzinfo=None).date().isoformat() == "2008-10-22"
        assert meta.taken_naive  # the Nikon writes no OffsetTimeOriginal
        assert (meta.camera_make, meta.camera_model) == ("NIKON", "COOLPIX P6000")
        assert (meta.width, meta.height) == (640, 480)


def test_eight_orientations_give_upright_sizes():
    from PIL import Image

    for shape, upright in (("landscape", (600, 450)), ("portrait", (450, 600))):
        for n in range(1, 9):
            path = require_samples() / "jpg" / "orientation" / f"{shape}_{n}.jpg"
            with Image.open(path) as image:
                stored = image.size
                meta = image_metadata(image, path)
            assert (meta.width, meta.height) == upright, path.name
            assert (meta.width, meta.height) == (stored[::-1] if n >= 5 else stored), path.name


def test_every_sample_reads_without_raising_and_the_counts():
    files = sample_files("jpg", "heic")
    assert len(files) == 93  # 88 JPEGs (tests/ and invalid/ included) and 5 HEIC/HEIF
    found = {path: file_metadata(path) for path in files}
    assert all(isinstance(meta, MediaMetadata) for meta in found.values())
    jpegs = {p: m for p, m in found.items() if p.suffix.lower() in (".jpg", ".jpeg")}
    dated = [p for p, m in jpegs.items() if m.taken_source == "exif"]
    located = [p for p, m in jpegs.items() if m.latitude is not None]
    cameras = [p for p, m in jpegs.items() if m.camera_make or m.camera_model]
    # Measured: 61 JPEGs with a date (55 DateTimeOriginal, 6 only IFD0 DateTime), 15 with coordinates
    # (the README's 19 counts GPS IFDs: 4 of them hold only GPSVersionID), 54 with make or model.
    assert len(dated) >= 60 and len(located) >= 15 and len(cameras) >= 50
    for meta in found.values():
        assert meta.taken_at is not None and meta.taken_at.tzinfo is not None  # a date, the mtime at worst
        assert meta.width and meta.height
        if meta.latitude is not None:
            assert -90 <= meta.latitude <= 90 and -180 <= meta.longitude <= 180
        json.dumps(meta.to_fields())


def test_heic_samples_read_with_exif():
    files = sample_files("heic")
    assert len(files) == 5
    found = {p.name: file_metadata(p) for p in files}
    iphone = found["iphone_13_pro_max.HEIC"]
    assert iphone.taken_at == datetime(2022, 2, 16, 12, 55, 41, tzinfo=timezone(timedelta(hours=1)))
    assert (iphone.taken_source, iphone.taken_naive) == ("exif", False)
    assert (iphone.camera_make, iphone.camera_model) == ("Apple", "iPhone 13 Pro Max")
    assert (iphone.width, iphone.height) == (3024, 4032)  # stored turned (EXIF 6), pillow-heif turns it
    older = found["IMG_5195.HEIC"]
    assert older.taken_at is not None and older.taken_at.utcoffset() == timedelta(hours=-5)
    assert older.latitude == pytest.approx(39.0513, abs=1e-3) and older.longitude == pytest.approx(-94.2888, abs=1e-3)
    nokia = found["HMD_Nokia_8.3_5G.heif"]  # only IFD0 DateTime, no offset; GPS west of Greenwich
    assert nokia.taken_source == "exif" and nokia.taken_naive and nokia.longitude is not None and nokia.longitude < 0
    assert found["samplefilehub.heif"].taken_source == "mtime"


def test_heic_is_sniffed_as_an_image_not_a_video(tmp_path):
    from jrsearch.retrieval.sniff import HEAD_BYTES, probe_kind, sniff
    from jrsearch.retrieval.types import MediaKind

    for path in sample_files("heic"):
        signature = sniff(path.read_bytes()[:HEAD_BYTES])
        assert signature is not None and signature.kind == MediaKind.IMAGE and signature.mime == "image/heic"
    disguised = tmp_path / "clip.mp4"  # a name that asks for a container probe
    disguised.write_bytes((require_samples() / "heic" / "samplefilehub.heif").read_bytes())
    assert probe_kind(disguised) == MediaKind.IMAGE


def test_heic_files_are_indexed_not_failed(tmp_path):
    from typer.testing import CliRunner

    from jrsearch.cli.main import app

    root = require_samples() / "heic"
    lib = tmp_path / "lib"
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(root), "--model", "tiny-test", "--json", "--library", str(lib)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["failed"] == []
    status = json.loads(runner.invoke(app, ["status", "--json", "--library", str(lib)]).stdout)
    assert status["items"] == {"image": {"indexed": 5}}
    query = root / "mobile" / "iphone_13_pro_max.HEIC"
    hits = json.loads(runner.invoke(app, ["query", "--image", str(query), "--json", "-k", "1",
                                          "--library", str(lib)]).stdout)
    assert hits[0]["path"] == str(query)


# ---------------------------------------------------------------- EXIF written with Pillow


def write_exif_photo(path: Path, make: str, model: str, orientation: int = 1) -> Path:
    from PIL import Image

    image = Image.new("RGB", (120, 80), (30, 90, 150))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = make, model, orientation
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2023:07:14 18:30:05"  # DateTimeOriginal
    sub[0x9011] = "-03:00"  # OffsetTimeOriginal
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "S", (Fraction(33), Fraction(52), Fraction(4))  # Sydney
    gps[3], gps[4] = "W", (Fraction(151), Fraction(12), Fraction(36))  # (mirrored west, for the sign)
    image.save(path, exif=exif)
    return path


def test_pillow_written_exif(tmp_path):
    from PIL import Image

    path = write_exif_photo(tmp_path / "made.jpg", "Canon\x00\x00  ", "EOS 5D  \x00\x00", orientation=6)
    meta = file_metadata(path)
    assert meta is not None
    assert meta.taken_at == datetime(2023, 7, 14, 18, 30, 5, tzinfo=timezone(timedelta(hours=-3)))
    assert (meta.taken_source, meta.taken_naive) == ("exif", False)
    assert meta.latitude == pytest.approx(-(33 + 52 / 60 + 4 / 3600))
    assert meta.longitude == pytest.approx(-(151 + 12 / 60 + 36 / 3600))
    assert (meta.camera_make, meta.camera_model) == ("Canon", "EOS 5D")
    assert (meta.width, meta.height) == (80, 120)  # orientation 6: a quarter turn
    with Image.open(path) as image:
        assert image_metadata(image, path) == meta

    from jrsearch.retrieval.imageio import open_image  # the indexer's image: upright, maybe a draft

    assert image_metadata(open_image(path.read_bytes(), draft_size=16), path) == meta


def test_fields_round_trip_and_are_json(tmp_path):
    meta = file_metadata(write_exif_photo(tmp_path / "made.jpg", "Nikon", "D90"))
    assert meta is not None
    fields = meta.to_fields()
    assert set(fields) == set(SQL_COLUMNS)
    assert fields["taken_at"] == "2023-07-14T18:30:05-03:00"
    assert fields["taken_ts"] == datetime(2023, 7, 14, 21, 30, 5, tzinfo=timezone.utc).timestamp()
    assert MediaMetadata.from_fields(json.loads(json.dumps(fields))) == meta
    assert MediaMetadata.from_fields({}) == MediaMetadata()
    assert MediaMetadata().to_fields()["taken_at"] is None


def test_no_exif_falls_back_to_mtime(tmp_path):
    path = make_image(tmp_path / "plain.png", seed=1)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    meta = file_metadata(path)
    assert meta is not None and meta.taken_source == "mtime" and not meta.taken_naive
    assert meta.taken_at is not None and meta.taken_at.timestamp() == 1_600_000_000
    assert (meta.width, meta.height, meta.latitude, meta.camera_make) == (96, 64, None, None)


def test_missing_and_unreadable_files(tmp_path):
    assert file_metadata(tmp_path / "nope.jpg") is None
    assert file_metadata(tmp_path) is None  # a folder
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff not a jpeg at all")
    meta = file_metadata(junk)
    assert meta is not None and meta.taken_source == "mtime" and meta.width is None
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    meta = file_metadata(empty)
    assert meta is not None and meta.taken_source == "mtime" and meta.duration_s is None


# ---------------------------------------------------------------- videos and sounds written with PyAV


def write_video(path: Path, metadata: dict[str, str], seconds: int = 2, fps: int = 8) -> Path:
    import av

    with av.open(str(path), "w") as container:
        container.metadata.update(metadata)
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_video_creation_time_location_and_duration(tmp_path):
    import av

    path = write_video(tmp_path / "clip.mp4", {"creation_time": "2021-06-01T12:34:56.000000Z",
                                               "location": "-33.8688+151.2093/"})
    meta = file_metadata(path)
    assert meta is not None
    assert meta.taken_at == datetime(2021, 6, 1, 12, 34, 56, tzinfo=timezone.utc)
    assert (meta.taken_source, meta.taken_naive) == ("container", False)
    assert (meta.latitude, meta.longitude) == (-33.8688, 151.2093)
    assert (meta.width, meta.height) == (64, 48) and meta.duration_s == pytest.approx(2.0, abs=0.2)
    with av.open(str(path)) as container:  # the indexer's open container, and its display matrix
        assert av_metadata(container, path, quarter_turned=True) == MediaMetadata(
            **{**meta.__dict__, "width": 48, "height": 64})
        assert container.streams.video[0].codec_context.width == 64  # left open and usable


def test_video_with_bad_or_no_creation_time_uses_mtime(tmp_path):
    for value in ("0000-00-00T00:00:00Z", "1904-01-01T00:00:00.000000Z", "yesterday"):
        path = write_video(tmp_path / f"clip{len(value)}.mp4", {"creation_time": value}, seconds=1)
        meta = av_metadata(path, path)
        assert meta.taken_source == "mtime" and meta.duration_s == pytest.approx(1.0, abs=0.2), value


def test_sound_duration(tmp_path):
    from helpers import make_sound, tone

    path = make_sound(tmp_path / "beep.wav", tone(440, 1.5))
    meta = file_metadata(path)
    assert meta is not None and meta.taken_source == "mtime"
    assert meta.duration_s == pytest.approx(1.5, abs=0.05) and (meta.width, meta.height) == (None, None)


# ---------------------------------------------------------------- hostile EXIF


ASCII, SHORT, LONG, RATIONAL, UNDEFINED = 2, 3, 4, 5, 7


def entry(tag: int, kind: int, payload: bytes, count: int | None = None) -> tuple[int, int, int, bytes]:
    size = {ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, UNDEFINED: 1}[kind]
    return tag, kind, len(payload) // size if count is None else count, payload


def ascii_entry(tag: int, text: str | bytes) -> tuple[int, int, int, bytes]:
    raw = text.encode("latin-1") if isinstance(text, str) else text
    return entry(tag, ASCII, raw + b"\x00")


def rationals(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack("<II", n, d) for n, d in pairs)


def exif_blob(ifd0: list, exif: list | None = None, gps: list | None = None) -> bytes:
    """A little-endian TIFF/EXIF block laid out by hand, so types and counts can be wrong."""
    def size(entries: list) -> int:
        return 6 + 12 * len(entries) + sum(len(p) + len(p) % 2 for *_, p in entries if len(p) > 4)

    ifd0 = list(ifd0) + [entry(0x8769, LONG, b"\0" * 4)] * bool(exif) + [entry(0x8825, LONG, b"\0" * 4)] * bool(gps)
    at_exif = 8 + size(ifd0)
    at_gps = at_exif + size(exif or [])
    ifd0 = [(t, k, c, struct.pack("<I", at_exif if t == 0x8769 else at_gps) if t in (0x8769, 0x8825) else p)
            for t, k, c, p in ifd0]

    def ifd(entries: list, start: int) -> bytes:
        head, data = struct.pack("<H", len(entries)), b""
        for tag, kind, count, payload in sorted(entries):
            if len(payload) <= 4:
                value = payload.ljust(4, b"\0")
            else:
                value = struct.pack("<I", start + 6 + 12 * len(entries) + len(data))
                data += payload + b"\0" * (len(payload) % 2)
            head += struct.pack("<HHI", tag, kind, count) + value
        return head + struct.pack("<I", 0) + data

    body = ifd(ifd0, 8) + (ifd(exif, at_exif) if exif else b"") + (ifd(gps, at_gps) if gps else b"")
    return b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + body


def with_exif(blob: bytes, size: tuple[int, int] = (40, 30)):
    from PIL import Image

    image = Image.new("RGB", size)
    image.info["exif"] = blob
    return image


def test_handmade_blob_reads_back():
    blob = exif_blob([ascii_entry(0x010F, "Leica"), entry(0x0112, SHORT, struct.pack("<H", 8))],
                     exif=[ascii_entry(0x9003, "2019:02:03 04:05:06"), ascii_entry(0x9011, "+05:30")],
                     gps=[ascii_entry(1, "N"), entry(2, RATIONAL, rationals((10, 1), (30, 1), (0, 1))),
                          ascii_entry(3, "E"), entry(4, RATIONAL, rationals((2025, 100), (0, 1), (0, 1)))])
    meta = image_metadata(with_exif(blob), Path("/nonexistent"))
    assert meta.camera_make == "Leica" and (meta.width, meta.height) == (30, 40)
    assert meta.taken_at == datetime(2019, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert (meta.latitude, meta.longitude) == (pytest.approx(10.5), pytest.approx(20.25))


HOSTILE = {
    "huge make": exif_blob([ascii_entry(0x010F, "A" * 2_000_000), ascii_entry(0x0110, "ok")]),
    "wrong types": exif_blob(
        [entry(0x010F, SHORT, struct.pack("<H", 7)), entry(0x0112, ASCII, b"6\x00"),
         entry(0x0132, RATIONAL, rationals((1, 0)))],
        exif=[entry(0x9003, SHORT, struct.pack("<HH", 2023, 7)), entry(0x9011, LONG, struct.pack("<I", 5))],
        gps=[entry(1, SHORT, struct.pack("<H", 1)), ascii_entry(2, "43.5"),
             entry(3, RATIONAL, rationals((1, 1))), entry(4, ASCII, b"11.8\x00")]),
    "zero denominators": exif_blob(
        [], gps=[ascii_entry(1, "N"), entry(2, RATIONAL, rationals((43, 0), (28, 0), (2, 0))),
                 ascii_entry(3, "E"), entry(4, RATIONAL, rationals((11, 1), (53, 0), (6, 1)))]),
    "out of range gps": exif_blob(
        [], gps=[ascii_entry(1, "N"), entry(2, RATIONAL, rationals((95, 1), (0, 1), (0, 1))),
                 ascii_entry(3, "E"), entry(4, RATIONAL, rationals((200, 1), (0, 1), (0, 1)))]),
    "zero dates": exif_blob([ascii_entry(0x0132, "0000:00:00 00:00:00")],
                            exif=[ascii_entry(0x9003, "    :  :     :  :  "),
                                  ascii_entry(0x9004, "2023:13:45 25:61:61"), ascii_entry(0x9011, "+99:00")]),
    "bytes and blanks": exif_blob([entry(0x010F, UNDEFINED, b"\xff\xfe\x00\x01"),
                                   ascii_entry(0x0110, b"\x00\x00   \x00")],
                                  exif=[entry(0x9003, UNDEFINED, b"\x00" * 20)]),
    "count past the end": exif_blob([(0x010F, ASCII, 0x7FFFFFFF, b"\0\0\0\0"),
                                     (0x0110, RATIONAL, 1 << 28, b"\xff" * 4)]),
    "pointers past the end": exif_blob([(0x8769, LONG, 1, struct.pack("<I", 1 << 30)),
                                        (0x8825, LONG, 1, struct.pack("<I", 0xFFFFFFF0))]),
    "ifd loops to itself": exif_blob([(0x8769, LONG, 1, struct.pack("<I", 8)),
                                      (0x8825, LONG, 1, struct.pack("<I", 8))]),
    "not tiff": b"Exif\x00\x00" + b"garbage!" * 10,
    "empty": b"",
}


@pytest.mark.filterwarnings("ignore")  # Pillow warns of the corrupt EXIF it reads
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_exif_never_raises(name, tmp_path):
    blob = HOSTILE[name]
    meta = image_metadata(with_exif(blob), tmp_path / "gone.jpg")
    assert meta.taken_source is None and meta.taken_at is None  # no date, and no file for an mtime
    assert (meta.latitude, meta.longitude) == (None, None)
    assert meta.camera_make is None and meta.camera_model in (None, "ok")
    assert (meta.width, meta.height) == (40, 30)
    for cut in (len(blob) // 2, 14, 9):  # truncated EXIF blocks
        image_metadata(with_exif(blob[:cut]), tmp_path / "gone.jpg")


@pytest.mark.filterwarnings("ignore")
def test_mutated_exif_never_raises(tmp_path):
    """Random bytes flipped in a real, complete EXIF block (date, GPS, camera): 400 variants."""
    path = write_exif_photo(tmp_path / "made.jpg", "Canon", "EOS 5D")
    from PIL import Image

    with Image.open(path) as image:
        blob = bytearray(image.info["exif"])
    rng = np.random.default_rng(0)
    for _ in range(400):
        mutated = bytearray(blob)
        for at in rng.integers(6, len(blob), size=int(rng.integers(1, 8))):
            mutated[at] = int(rng.integers(0, 256))
        image_metadata(with_exif(bytes(mutated)), path)


@pytest.mark.filterwarnings("ignore")
def test_truncated_exif_in_a_jpeg_file(tmp_path):
    """A JPEG whose APP1 segment ends early: the file cut inside its EXIF, and one whose APP1 length
    claims more than the file holds."""
    whole = write_exif_photo(tmp_path / "whole.jpg", "Canon", "EOS 5D").read_bytes()
    for cut in (30, 60, 120):
        part = tmp_path / f"cut{cut}.jpg"
        part.write_bytes(whole[:cut])
        meta = file_metadata(part)
        assert meta is not None and meta.taken_source in ("exif", "mtime")
