"""A full disk, whatever raised it: recognised in one place and told in one line.

SQLite says "database or disk is full" (SQLITE_FULL) and rolls the transaction back; the OS says
ENOSPC (or EDQUOT for a quota); faiss wraps the OS's words in a RuntimeError. `no_space_as_error`
turns any of them into a `DiskFullError` that names the library, the space it needs and the space
that is free, with nothing chained to it (the CLI prints it as one line).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from jrsearch.retrieval.errors import DiskFullError

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
NO_SPACE_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded")
SQLITE_MARGIN = 4 * 2**20  # a commit also needs room for SQLite's WAL checkpoint (1,000 pages of 4 KiB)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or during, is a full disk."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            return True
        if any(words in str(exc).lower() for words in NO_SPACE_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def out_of_space(exc: BaseException, library: Path, need_bytes: int | None) -> bool:
    """A full disk by its spelling, or an `OSError` met with less free space than the write needed
    (numpy's short write says only "N requested and M written")."""
    if is_disk_full(exc):
        return True
    free = free_bytes(library)
    return isinstance(exc, OSError) and bool(need_bytes) and free is not None and free < (need_bytes or 0)


def free_bytes(path: Path) -> int | None:
    """Free space for an unprivileged writer on the filesystem holding `path` (or its nearest parent)."""
    path = Path(os.path.abspath(path))
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def disk_full_error(library: Path, doing: str, need_bytes: int | None = None,
                    then: str = "run the same command again") -> DiskFullError:
    free = free_bytes(library)
    space = f"{human_bytes(free)} free" if free is not None else "no free space"
    if need_bytes:
        needed = max(need_bytes - (free or 0), 0) + 2**20  # what is missing, and a MiB to spare
        asks = f"{doing} needs about {human_bytes(need_bytes)} ({space}): free at least {human_bytes(needed)}"
    else:
        asks = f"{doing} failed ({space}): free some space"
    return DiskFullError(f"no space left on the disk holding library {library}: {asks} and {then}; "
                         f"everything committed before is kept")


@contextmanager
def no_space_as_error(library: Path, doing: str, need_bytes: int | Callable[[], int] | None = None,
                      then: str = "run the same command again") -> Iterator[None]:
    """Re-raise a full disk met inside the block as one `DiskFullError`; anything else passes."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        need = need_bytes() if callable(need_bytes) else need_bytes
        if not out_of_space(exc, library, need):
            raise
        raise disk_full_error(library, doing, need, then) from None


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'; binary units, two significant figures below ten."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
