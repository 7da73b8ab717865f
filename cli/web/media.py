"""Serving library files safely: by item id only, checked against what was indexed, with ranges.

A client never names a path, and a failed item is never served. The stored path is opened
(symlinks followed); the real path of the open descriptor must lie under an indexed folder, and
the open file must still be the regular file that was indexed before a byte of it is sent: same
size and mtime, and for files up to `VERIFY_MAX_BYTES` the same content hash as the one stored
(size and mtime are easy to copy: `touch -r`; the store keeps no device and inode). The checks
run on the open descriptor, so a file swapped after the check is not the one read; a verified
file version (device, inode, size, mtime, ctime) is not hashed again.
"""

from __future__ import annotations

import mimetypes
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fastapi import HTTPException
from starlette.responses import Response, StreamingResponse

from jrsearch.retrieval.catalog import ItemRecord
from jrsearch.retrieval.confine import allowed_real_path, descriptor_real_path
from jrsearch.retrieval.hashing import hash_stream
from jrsearch.retrieval.paths import display_path
from jrsearch.retrieval.sniff import HEAD_BYTES, Signature, sniff
from jrsearch.retrieval.types import ItemStatus

CHUNK = 256 * 1024
VERIFY_MAX_BYTES = 256 * 2**20  # hashed before serving, once per file version: 64 MiB took 0.22 s (busy 2-core VM)
VERIFIED_MEMO = 16384


@dataclass
class OpenedFile:
    handle: BinaryIO
    size: int
    media_type: str


def open_item(item: ItemRecord, roots: list[str]) -> OpenedFile:
    """Open an item's file for reading, or raise 404/409 saying why it cannot be served.

    `roots`: the library's indexed folders (`walk_record.recorded_roots`); the real path of the
    opened descriptor must lie under one (`confine.allowed_real_path`)."""
    refuse_failed(item)
    try:
        # O_NONBLOCK: opening a FIFO put in a file's place must not wait for a writer
        fd = os.open(item.path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise HTTPException(404, f"item {item.id} is no longer on disk ({display_path(item.path)}); "
                                 f"run `jrsearch index` "
                                 f"to forget deleted files") from None
    except OSError as exc:  # permission denied, a symlink loop
        raise HTTPException(403, f"item {item.id} cannot be read: {exc.strerror or exc}") from None
    handle = os.fdopen(fd, "rb")
    if not allowed_real_path(item.path, descriptor_real_path(fd, item.path), roots):
        handle.close()
        raise HTTPException(404, f"item {item.id}: its file now leads outside the indexed folders "
                                 f"({display_path(item.path)}); it is not served")
    info = os.fstat(fd)
    if not (stat.S_ISREG(info.st_mode) and info.st_size == item.size and info.st_mtime_ns == item.mtime_ns
            and _same_content(handle, info, item.content_hash)):
        handle.close()
        raise HTTPException(409, f"item {item.id} changed on disk since it was indexed ({display_path(item.path)}); "
                                 f"run `jrsearch index` again")
    return OpenedFile(handle, info.st_size, _media_type(handle, item))


def refuse_failed(item: ItemRecord) -> None:
    """A file that failed to index is never served (nor pictured): its bytes were never vetted."""
    if item.status == ItemStatus.FAILED:
        raise HTTPException(404, f"item {item.id} failed to index ({item.error or 'no reason recorded'}); "
                                 f"its file is not served")


def _media_type(handle: BinaryIO, item: ItemRecord) -> str:
    """By content where a signature agrees with the item's kind (a JPEG named .mp4, indexed as an
    image, is image/jpeg), else by name."""
    signature = sniff(handle.read(HEAD_BYTES))
    handle.seek(0)
    if signature is not None and signature.kind.value == item.kind:
        return signature.mime
    return mimetypes.guess_type(item.path)[0] or "application/octet-stream"


_verified: OrderedDict[tuple[int, ...], str] = OrderedDict()
_verified_lock = threading.Lock()


def _same_content(handle: BinaryIO, info: os.stat_result, expected: str | None) -> bool:
    """Whether the open file holds the bytes that were indexed (files over VERIFY_MAX_BYTES, and
    items stored without a hash, pass on size and mtime alone)."""
    if expected is None or info.st_size > VERIFY_MAX_BYTES:
        return True
    version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    with _verified_lock:
        known = _verified.get(version)
    if known is None:
        known = hash_stream(handle)
        handle.seek(0)
        with _verified_lock:
            _verified[version] = known
            while len(_verified) > VERIFIED_MEMO:
                _verified.popitem(last=False)
    return known == expected


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as (first, last), inclusive; None for a header to ignore (send it all).

    Follows RFC 9110: a malformed or multi-range header is ignored, a well-formed range that
    lies outside the file is refused with 416.
    """
    unit, _, spec = header.partition("=")
    first_s, dash, last_s = (part.strip() for part in spec.partition("-"))
    well_formed = (unit.strip().lower() == "bytes" and dash and (first_s or last_s)
                   and all(part == "" or part.isdigit() for part in (first_s, last_s)))
    if not well_formed:
        return None
    if first_s == "":  # the last N bytes
        if int(last_s) == 0 or size == 0:
            _unsatisfiable(size)
        return max(0, size - int(last_s)), size - 1
    first, last = int(first_s), int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None
    if first >= size:
        _unsatisfiable(size)
    return first, min(last, size - 1)


def _unsatisfiable(size: int) -> None:
    raise HTTPException(416, f"requested range is outside the file ({size} bytes)",
                        headers={"Content-Range": f"bytes */{size}"})


def file_response(opened: OpenedFile, range_header: str | None) -> Response:
    """The whole file (200) or one byte range of it (206), streamed from the open handle."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    try:
        wanted = parse_range(range_header, opened.size) if range_header else None
    except HTTPException:
        opened.handle.close()
        raise
    first, last = wanted if wanted else (0, opened.size - 1)
    headers["Content-Length"] = str(last - first + 1)
    if wanted:
        headers["Content-Range"] = f"bytes {first}-{last}/{opened.size}"
    return StreamingResponse(_chunks(opened.handle, first, last), status_code=206 if wanted else 200,
                             media_type=opened.media_type, headers=headers)


def _chunks(handle: BinaryIO, first: int, last: int) -> Iterator[bytes]:
    with handle:
        handle.seek(first)
        left = last - first + 1
        while left > 0:
            data = handle.read(min(CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


def sniff_upload(data: bytes) -> Signature | None:
    """What an upload is by its first bytes (never by its name or declared type)."""
    return sniff(data[:HEAD_BYTES])
