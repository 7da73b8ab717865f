"""The contract of a media kind's handler, and the registry the pipeline walks.

A handler says which kind it indexes and by which file extensions, and indexes a list of files
of that kind: it decodes each (a `Decoded`, `indexer/decode.py`), embeds it with `run.encoder`
(or a tower of its own), and stores it through `indexer.commit.commit` as its kind's record
(`retrieval.library.ImageRecord`, `TextRecord`, `VideoRecord`, `SoundRecord`).
"""

from __future__ import annotations

from typing import Protocol

from jrsearch.indexer.audio import SOUNDS
from jrsearch.indexer.changes import Candidate
from jrsearch.indexer.images import IMAGES
from jrsearch.indexer.run import IndexRun
from jrsearch.indexer.texts import TEXTS
from jrsearch.indexer.video import VIDEOS
from jrsearch.retrieval.types import MediaKind


class KindHandler(Protocol):
    @property
    def kind(self) -> MediaKind:
        """The kind of file it indexes (its key in `KIND_HANDLERS`)."""
        ...

    @property
    def extensions(self) -> frozenset[str]:
        """The lower-case suffixes `indexer/walk.py` names this kind by."""
        ...

    def index(self, run: IndexRun, todo: list[Candidate]) -> None:
        """Decode, embed and commit `todo` (all of this kind), advancing `run.progress` per file."""
        ...


# The registry, in the order a run indexes kinds: one entry per handler module.
KIND_HANDLERS: dict[MediaKind, KindHandler] = {h.kind: h for h in (IMAGES, TEXTS, VIDEOS, SOUNDS)}
