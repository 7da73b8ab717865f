"""Confinement: which real paths belong to a library's indexed folders (its roots).

The walk follows a symlink (to a folder or a file) only where its real path lies under a root,
and never into the kernel's pseudo file systems; the server sends a file only if the real path
of the descriptor it opened lies under a root. Pure path logic plus the descriptor's real path;
imports nothing of jrsearch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

SYSTEM_TREES = ("/proc", "/sys", "/dev")  # never walked, never served, whatever a root says


def is_under(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies below it (both absolute and normalised)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def in_system_tree(real: str) -> bool:
    return any(is_under(real, tree) for tree in SYSTEM_TREES)


def inside(real: str, real_roots: Iterable[str]) -> bool:
    """Whether the real path `real` lies under one of `real_roots` (real paths) and outside /proc, /sys, /dev."""
    return not in_system_tree(real) and any(is_under(real, root) for root in real_roots)


def real_roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    return [os.path.realpath(root) for root in roots]


def allowed_real_path(stored: str, real: str, roots: Iterable[str]) -> bool:
    """Whether a stored item whose file really is `real` may be served.

    Under a recorded root (`roots`: the folders as indexed), the real path must lie under one of
    them. An item stored before roots were recorded (no recorded root holds its path) may be
    served only from its own folder: a symlink leaving the folder it was found in is refused."""
    roots = list(roots)
    if any(is_under(stored, root) for root in roots):
        return inside(real, real_roots(roots))
    return inside(real, [os.path.realpath(os.path.dirname(stored))])


def descriptor_real_path(fd: int, opened: str) -> str:
    """The real path of the file open as `fd` (which was opened through the path `opened`).

    On Linux, read from /proc/self/fd: the file itself, whatever happened to `opened` meanwhile.
    Elsewhere the path is resolved and must still name the file open as `fd` (same device and
    inode); if not, it was swapped, and the empty string (inside nothing) is returned."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
    real = os.path.realpath(opened)
    try:
        named, held = os.stat(real), os.fstat(fd)
    except OSError:
        return ""
    return real if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino) else ""
