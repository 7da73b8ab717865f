"""Find the media under a path: recursive, confined to the indexed folders (symlinks leading out
of them are left out, with why), symlink-loop safe, hidden files skipped by default."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from jrsearch.indexer.kinds import kind_info, kind_of_suffix
from jrsearch.retrieval.confine import in_system_tree, inside, real_roots
from jrsearch.retrieval.paths import display_path
from jrsearch.retrieval.sniff import probe_kind
from jrsearch.retrieval.types import MediaKind

# Suffixes no registered kind claims that are never probed as images either.
NOT_MEDIA = {".md", ".json", ".csv", ".py", ".html", ".xml", ".db", ".faiss", ".pdf", ".zip", ".gz", ".tar", ".log",
             ".yaml", ".yml", ".toml", ".ini", ".lock"}


def classify(path: Path, explicit: bool = False) -> str | None:
    """The kind (its name) of media a file holds, or None when it is not media jrsearch indexes.

    By the extensions the registered kinds claim (`indexer/kinds.py`). Images are recognised by
    content as well as by name, so a JPEG without an extension is found. A kind indexed only when
    named (text corpora) is taken only for a file named on the command line (`explicit`), so the
    notes lying in a photo folder are not taken for captions.
    """
    suffix = path.suffix.lower()
    info = kind_of_suffix(suffix)
    if info is not None:
        return info.name if explicit or not info.only_when_named else None
    if suffix in NOT_MEDIA:
        return None
    return MediaKind.IMAGE if _looks_like_image(path) else None


def content_kind(path: Path, named: str) -> str:
    """The kind a file of a kind checked `by_content` (video, sound) really holds: a JPEG named
    `.mp4` is an image, an `.mp4` with no pictures is a sound, a `.mp3` with moving pictures is a
    video. Other kinds, and files nothing recognises (they fail later, with the reason), keep the
    kind their name gave.

    Reads the file's first bytes and, for containers, its stream headers: the pipeline asks only
    about the files a run will index, never about every file of a walk.
    """
    info = kind_info(named)
    if info is None or not info.by_content:
        return named
    return probe_kind(path) or named


def _looks_like_image(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:  # reads the header only
            return bool(image.format)
    except Exception:  # anything Pillow cannot identify is simply not an image
        return False


@dataclass
class LeftOut:
    """What a walk did not enter or take, by path, with the reason (`retrieval/walk_record.py` keeps it)."""

    outside: dict[str, str] = field(default_factory=dict)  # symlinks leading out of the roots
    unreadable: dict[str, str] = field(default_factory=dict)  # folders that could not be listed

    def all(self) -> dict[str, str]:
        return {**self.outside, **self.unreadable}


def walk(root: Path, include_hidden: bool = False, skip: Path | None = None, roots: list[Path] | None = None,
         left_out: LeftOut | None = None) -> Iterator[tuple[Path, str]]:
    """Yield (absolute path, kind name) for every media file under `root` (or `root` itself), sorted.

    A symlink (to a folder or a file) is followed only where its real path lies under one of
    `roots` (default: `root`), else it is put in `left_out.outside`; /proc, /sys and /dev are
    never entered. A folder is walked once (a link loop ends there); one that cannot be read is
    put in `left_out.unreadable`. `skip` (the library's own folder) is never walked.
    """
    root = Path(os.path.abspath(root))
    left_out = left_out if left_out is not None else LeftOut()
    if not root.is_dir():
        kind = classify(root, explicit=True) if root.is_file() else None
        if kind is not None:
            yield root, kind
        return
    allowed = real_roots(roots or [root])
    if not inside(os.path.realpath(root), allowed):
        return
    seen: set[tuple[int, int]] = set()
    skip_real = os.path.realpath(skip) if skip else None

    def unreadable(exc: OSError) -> None:
        left_out.unreadable[str(exc.filename)] = f"folder cannot be read ({exc.strerror or exc}); not indexed"

    for directory, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        real_dir = os.path.realpath(directory)
        try:
            stat = os.stat(directory)
        except OSError as exc:
            unreadable(exc)
            dirnames[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in seen or real_dir == skip_real:
            dirnames[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        if not include_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames[:] = sorted(d for d in dirnames if _enters(Path(directory) / d, real_dir, allowed, left_out))
        for name in sorted(filenames):
            if not include_hidden and name.startswith("."):
                continue
            path = Path(directory) / name
            if path.is_symlink() and not _confined(path, allowed, left_out):
                continue
            if not path.is_file():  # broken symlinks, sockets, fifos
                continue
            kind = classify(path)
            if kind is not None:
                yield path, kind


def _enters(folder: Path, real_parent: str, allowed: list[str], left_out: LeftOut) -> bool:
    """Whether the walk goes into `folder`: inside the roots, not /proc, /sys or /dev."""
    if folder.is_symlink():
        return _confined(folder, allowed, left_out)
    return not in_system_tree(os.path.join(real_parent, folder.name))


def _confined(link: Path, allowed: list[str], left_out: LeftOut) -> bool:
    real = os.path.realpath(link)
    if inside(real, allowed):
        return True
    what = "folder" if os.path.isdir(real) else "file"
    left_out.outside[str(link)] = (f"symlink to the {what} {display_path(real)}, outside the indexed folders; "
                                   "not followed")
    return False
