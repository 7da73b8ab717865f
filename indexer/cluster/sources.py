"""SOURCES of `jrsearch cluster embed` -> shards of work, and a work chunk -> decoded rows.

A source is a folder, a file list (.txt: one path or URL a line), a parquet table (a `url`,
`image_path` or `path` column, and `caption` if present), or a webdataset tar shard; any of them a
local path or an fsspec URL (s3://, gs://, ...; a glob such as s3://b/shards/*.tar is expanded).
Listed images are cut into shards of `shard_size`, in the order given; each tar is its own shard.
Decoding runs in Ray tasks, a chunk of `DECODE_CHUNK` images per task, so many CPUs decode one shard.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jrsearch.retrieval.catalog import camera_name
from jrsearch.retrieval.cluster.dataset import DatasetError, item_id
from jrsearch.retrieval.errors import MediaError
from jrsearch.retrieval.imageio import open_image
from jrsearch.retrieval.media_metadata import MediaMetadata, image_metadata

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
LIST_SUFFIXES = {".txt", ".lst"}
URL_COLUMNS = ("url", "image_path", "path")
CAPTION_COLUMNS = ("caption", "text", "TEXT")
DECODE_CHUNK = 64
MAX_IMAGE_BYTES = 256 * 1024 * 1024


@dataclass
class SourcePlan:
    """Every listed image (with its caption, if any), then the tar shards."""

    listed: list[tuple[str, str | None]]
    tars: list[str]

    def shard_count(self, shard_size: int) -> int:
        return -(-len(self.listed) // shard_size) + len(self.tars)

    def chunks(self, shard_size: int, skip: set[int]) -> list[dict[str, Any]]:
        """Work rows for the shards not in `skip`: list chunks of DECODE_CHUNK images, one per tar."""
        rows = []
        list_shards = -(-len(self.listed) // shard_size)
        for shard in range(list_shards):
            if shard in skip:
                continue
            items = self.listed[shard * shard_size:(shard + 1) * shard_size]
            for start in range(0, len(items), DECODE_CHUNK):
                part = items[start:start + DECODE_CHUNK]
                rows.append({"shard": shard, "start": start, "expected": len(items), "tar": "",
                             "paths": [p for p, _ in part], "captions": [c or "" for _, c in part]})
        for n, tar in enumerate(self.tars):
            if list_shards + n not in skip:
                rows.append({"shard": list_shards + n, "start": 0, "expected": -1, "tar": tar,
                             "paths": [], "captions": []})
        return rows


def _is_url(source: str) -> bool:
    return "://" in source


def plan_sources(sources: list[str]) -> SourcePlan:
    """Expand SOURCES (in order; folders sorted) into a `SourcePlan`; raise if one is missing."""
    import fsspec

    listed: list[tuple[str, str | None]] = []
    tars: list[str] = []
    for source in sources:
        fs, path = fsspec.core.url_to_fs(source)
        name = fs.unstrip_protocol if _is_url(source) else str
        matches = sorted(fs.glob(path)) if any(c in path for c in "*?[") else [path]
        if not matches or not fs.exists(matches[0]):
            raise DatasetError(f"source {source} does not exist; pass folders, file lists (.txt), parquet "
                               f"tables or webdataset .tar shards")
        for match in matches:
            suffix = posixpath.splitext(match)[1].lower()
            if fs.isdir(match):
                listed += [(name(p), None) for p in sorted(fs.find(match))
                           if posixpath.splitext(p)[1].lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.split("/"))]
            elif suffix == ".tar":
                tars.append(name(match))
            elif suffix == ".parquet":
                listed += _parquet_items(fs, match, source)
            elif suffix in LIST_SUFFIXES:
                with fs.open(match, "rt", encoding="utf-8") as handle:
                    listed += [(line.strip(), None) for line in handle if line.strip()]
            elif suffix in IMAGE_SUFFIXES:
                listed.append((name(match), None))
            else:
                raise DatasetError(f"source {match}: not a folder, .txt file list, .parquet table, .tar shard "
                                   f"or image")
    if not listed and not tars:
        raise DatasetError(f"no images found in {', '.join(sources)}")
    return SourcePlan(listed, tars)


def _parquet_items(fs, path: str, source: str) -> list[tuple[str, str | None]]:
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        names = pq.read_schema(handle).names
    url = next((c for c in URL_COLUMNS if c in names), None)
    if url is None:
        raise DatasetError(f"parquet source {source} has none of the columns {', '.join(URL_COLUMNS)}")
    caption = next((c for c in CAPTION_COLUMNS if c in names), None)
    with fs.open(path, "rb") as handle:
        table = pq.read_table(handle, columns=[url] + ([caption] if caption else []))
    urls = table.column(url).to_pylist()
    captions = table.column(caption).to_pylist() if caption else [None] * len(urls)
    return list(zip(urls, captions, strict=True))


def _read(path: str) -> tuple[bytes, int | None]:
    """The file's bytes, and its mtime (ns) when it is a local file."""
    if _is_url(path):
        import fsspec

        with fsspec.open(path, "rb") as handle:
            return handle.read(), None
    with open(path, "rb") as handle:
        data = handle.read(MAX_IMAGE_BYTES + 1)
        return data, os.fstat(handle.fileno()).st_mtime_ns


def _row(shard: int, position: int, expected: int, path: str, caption: str | None, data: bytes | None,
         mtime_ns: int | None, transform: Callable, image_size: int, error: str | None = None) -> dict:
    pixels = None
    width = height = 0
    about = MediaMetadata()
    if error is None and data is not None:
        if len(data) > MAX_IMAGE_BYTES:
            error = f"file too large (over {MAX_IMAGE_BYTES:,} bytes)"
        else:
            try:
                image = open_image(data, name=path, draft_size=image_size)
                width, height = image.info["full_size"]
                about = image_metadata(image, Path(path), mtime_ns=mtime_ns)  # a tar member's has no mtime
                pixels = transform(image)
            except MediaError as exc:
                error = exc.reason
    fields = about.to_fields()
    return {"shard": shard, "pos": position, "expected": expected, "id": item_id(shard, position),
            "image_path": path, "caption": caption or "", "size": len(data) if data is not None else 0,
            "width": width, "height": height, "mtime_ns": mtime_ns if mtime_ns is not None else -1,
            # unknown as "" and NaN, not None: Ray's numpy batches keep one dtype a column
            "taken_at": fields["taken_at"] or "", "taken_ts": _or_nan(fields["taken_ts"]),
            "taken_source": fields["taken_source"] or "", "latitude": _or_nan(about.latitude),
            "longitude": _or_nan(about.longitude), "camera": camera_name(about.camera_make, about.camera_model) or "",
            "ok": pixels is not None, "error": error or "",
            "pixels": pixels if pixels is not None else np.zeros((3, image_size, image_size), np.float32)}


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def decode_chunk(chunk: dict[str, Any], transform: Callable, image_size: int) -> list[dict]:
    """One work row -> one decoded row per image (failures kept, flagged, with the reason)."""
    if chunk["tar"]:
        return list(_decode_tar(chunk["shard"], chunk["tar"], transform, image_size))
    rows = []
    for offset, (path, caption) in enumerate(zip(chunk["paths"], chunk["captions"], strict=True)):
        try:
            data, mtime_ns = _read(path)
            rows.append(_row(chunk["shard"], chunk["start"] + offset, chunk["expected"], path, caption, data,
                             mtime_ns, transform, image_size))
        except OSError as exc:
            rows.append(_row(chunk["shard"], chunk["start"] + offset, chunk["expected"], path, caption, None,
                             None, transform, image_size, error=f"cannot read: {exc}"))
    return rows


def _decode_tar(shard: int, url: str, transform: Callable, image_size: int) -> Iterator[dict]:
    """A webdataset shard: members grouped by key (`dir/key.jpg`, `dir/key.txt`, `dir/key.json`)."""
    import json

    import fsspec

    samples: dict[str, dict[str, bytes]] = {}
    with fsspec.open(url, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            extracted = tar.extractfile(member)
            if extracted is not None:
                samples.setdefault(key, {})[ext.lower()] = extracted.read()
    keyed = [(key, parts) for key, parts in samples.items()
             if any("." + ext in IMAGE_SUFFIXES for ext in parts)]
    for position, (key, parts) in enumerate(keyed):
        ext = next(e for e in parts if "." + e in IMAGE_SUFFIXES)
        caption = parts["txt"].decode("utf-8", "replace") if "txt" in parts else None
        if caption is None and "json" in parts:
            try:
                caption = json.loads(parts["json"]).get("caption")
            except (ValueError, AttributeError):
                caption = None
        yield _row(shard, position, len(keyed), f"{url}#{key}.{ext}", caption, parts[ext], None, transform,
                   image_size)
