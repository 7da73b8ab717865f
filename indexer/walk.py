"""Find the media under a path: recursive, symlink-loop safe, hidden files skipped by default."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from jrsearch.retrieval.sniff import probe_kind
from jrsearch.retrieval.types import MediaKind

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
                    ".jfif", ".jpe", ".ico", ".tga", ".heic", ".avif"}
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif"}
TEXT_EXTENSIONS = {".txt", ".jsonl", ".tsv"}
NOT_MEDIA = TEXT_EXTENSIONS | {".md", ".json", ".csv", ".py", ".html", ".xml", ".db", ".faiss", ".pdf", ".zip",
                               ".gz", ".tar", ".log", ".yaml", ".yml", ".toml", ".ini", ".lock"}


def classify(path: Path, explicit: bool = False) -> MediaKind | None:
    """The kind of media a file holds, or None when it is not media jrsearch indexes.

    Images are recognised by content as well as by name, so a JPEG without an extension is
    found. Text corpora are indexed only when named on the command line (`explicit`), so the
    notes lying in a photo folder are not taken for captions.
    """
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return MediaKind.IMAGE
    if suffix in VIDEO_EXTENSIONS:
        return MediaKind.VIDEO
    if suffix in AUDIO_EXTENSIONS:
        return MediaKind.AUDIO
    if suffix in TEXT_EXTENSIONS:
        return MediaKind.TEXT if explicit else None
    if suffix in NOT_MEDIA:
        return None
    return MediaKind.IMAGE if _looks_like_image(path) else None


def content_kind(path: Path, named: MediaKind) -> MediaKind:
    """The kind a video or sound file really holds, by content: a JPEG named `.mp4` is an image, an
    `.mp4` with no pictures is a sound, a `.mp3` with moving pictures is a video. Other kinds, and
    files nothing recognises (they fail later, with the reason), keep the kind their name gave.

    Reads the file's first bytes and, for containers, its stream headers: the pipeline asks only
    about the files a run will index, never about every file of a walk.
    """
    if named not in (MediaKind.VIDEO, MediaKind.AUDIO):
        return named
    return probe_kind(path) or named


def _looks_like_image(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:  # reads the header only
            return bool(image.format)
    except Exception:  # anything Pillow cannot identify is simply not an image
        return False


def walk(root: Path, include_hidden: bool = False, skip: Path | None = None) -> Iterator[tuple[Path, MediaKind]]:
    """Yield (absolute path, kind) for every media file under `root` (or `root` itself), sorted.

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
