"""The contract of a media kind: what it is (`KindInfo`) and how it is indexed (`KindHandler`).

A handler module (`images.py`, `texts.py`, `video.py`, `audio.py`, or a new one) defines one
handler; `indexer/kinds.py` registers it. Everything else that treats kinds differently (the walk,
the pipeline, the web page's thumbnails) reads the handler's `KindInfo` through that registry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from jrsearch.indexer.changes import Candidate
from jrsearch.indexer.run import IndexRun


class Picture(str, enum.Enum):
    """How a kind is shown as a picture (thumbnails on the web page)."""

    FILE = "file"  # the file is a picture
    FRAME = "frame"  # pictures over time: the frame at a result's time
    SOUND = "sound"  # sounds: the spectrogram of a result's time range (cli/web/sound_picture.py)


@dataclass(frozen=True)
class KindInfo:
    """What the rest of jrsearch knows about a kind besides its handler's code."""

    name: str  # stored in `items.kind`; names the kind's index and shard folder (`MediaKind` for shipped kinds)
    extensions: frozenset[str]  # lower-case suffixes, with the dot, that the walk names it by
    picture: Picture | None = None  # None: no thumbnail
    by_content: bool = False  # its names are checked by content (`retrieval.sniff.probe_kind`): video vs sound
    only_when_named: bool = False  # indexed only when named on the command line, never found in a folder walk


class KindHandler(Protocol):
    """Indexes the files of one kind: decodes each (a `Decoded`, `indexer/decode.py`), embeds it
    with `run.encoder` (or a tower of its own, `run.towers`), and stores it through
    `indexer.commit.commit` as its kind's record (a `retrieval.library.FileRecord`)."""

    @property
    def info(self) -> KindInfo:
        """The kind it indexes (its key in `KIND_HANDLERS` is `info.name`) and its facts."""
        ...

    def index(self, run: IndexRun, todo: list[Candidate]) -> None:
        """Decode, embed and commit `todo` (all of this kind), advancing `run.progress` per file."""
        ...

    def revisit(self, run: IndexRun, unchanged: list[Path]) -> list[Candidate]:
        """Files of this kind, unchanged on disk since they were stored, that this run should index
        again all the same (a video stored without its sound, now that an audio tower is there).
        Handlers that never do inherit this (by subclassing `KindHandler`)."""
        return []
