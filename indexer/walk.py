"""Find the media under a path: recursive, symlink-loop safe, hidden files skipped by default."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from jrsearch.indexer.kinds import kind_info, kind_of_suffix
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


def walk(root: Path, include_hidden: bool = False, skip: Path | None = None) -> Iterator[tuple[Path, str]]:
    """Yield (absolute path, kind name) for every media file under `root` (or `root` itself), sorted.

    Symlinked directories are followed once: a directory reached again through a link loop
    is skipped. `skip` (the library's own folder) is never walked.
    """
    root = Path(os.path.abspath(root))
    if root.is_file():
        kind = classify(root, explicit=True)
        if kind is not None:
            yield root, kind
        return
    seen: set[tuple[int, int]] = set()
    skip_real = os.path.realpath(skip) if skip else None
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        stat = os.stat(directory)
        if (stat.st_dev, stat.st_ino) in seen or os.path.realpath(directory) == skip_real:
            dirnames[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        if not include_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames.sort()
        for name in sorted(filenames):
            if not include_hidden and name.startswith("."):
                continue
            path = Path(directory) / name
            if not path.is_file():  # broken symlinks, sockets, fifos
                continue
            kind = classify(path)
            if kind is not None:
                yield path, kind
