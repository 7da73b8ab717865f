"""A file given as a query (`--image`, `--audio`, the Python API): checked before a byte is read,
so a folder, a FIFO, a device or a huge file is one line saying what it is, not a hang or a read
of gigabytes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from jrsearch.retrieval.diskspace import human_bytes
from jrsearch.retrieval.errors import QueryError

MAX_QUERY_FILE_BYTES = 64 * 2**20  # an example to search by: photos and a few minutes of WAV fit
SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
NAMES = {"audio": "sound"}


def check_query_file(path: Path, modality: str) -> None:
    """Raise `QueryError` unless `path` is a regular file of at most `MAX_QUERY_FILE_BYTES`."""
    what = f"query {NAMES.get(modality, modality)} {path}"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise QueryError(f"{what} does not exist") from None
    except OSError as exc:
        raise QueryError(f"cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise QueryError(f"{what} is a folder; pass one file to search by")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in SPECIAL_FILES if test(info.st_mode)), "not a regular file")
        raise QueryError(f"{what} is not a regular file ({kind}); pass a file to search by")
    if info.st_size > MAX_QUERY_FILE_BYTES:
        raise QueryError(f"{what} is {human_bytes(info.st_size)}, over the {human_bytes(MAX_QUERY_FILE_BYTES)} "
                         f"a query file may have; pass a smaller file")
