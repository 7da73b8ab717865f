"""What one indexing run carries: its options, its report, its progress, and the `IndexRun` that
bundles them for the kind handlers (`indexer/kinds.py`). Imports no handler and no pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jrsearch.retrieval.encoders import Encoder
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.towers import LibraryTowers


@dataclass
class IndexReport:
    indexed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # files indexed, by kind
    captions: dict[str, int] = field(default_factory=dict)  # texts indexed, by the corpus (path) holding them
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0  # files left for a later run (sound without an audio tower): see notes
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what a person should know (e.g. sound skipped: no tower)
    vector_bytes: int = 0  # float32 bytes of the vectors stored by this run (what the indexes grow by)

    def to_json(self) -> dict[str, Any]:
        return {"indexed": self.indexed, "indexed_kinds": self.kinds, "captions": sum(self.captions.values()),
                "unchanged": self.unchanged, "removed": self.removed,
                "skipped": self.skipped, "failed": [{"path": p, "error": e} for p, e in self.failed],
                "seconds": round(self.seconds, 3), "notes": self.notes}


class Progress(Protocol):
    """What the pipeline tells its caller; the CLI draws it as a bar with rate and ETA."""

    def start(self, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NoProgress:
    """A `Progress` that shows nothing (library callers, tests, benchmarks)."""

    def start(self, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@dataclass
class IndexOptions:
    batch_size: int = 64
    workers: int = 2
    include_hidden: bool = False
    audio_model: Path | None = None  # an audio tower checkpoint for sound files and soundtracks
    video_fps: float = 1.0  # video frames sampled per second (plus scene changes)
    retry_failed: bool = False  # try files that failed before again, even if unchanged


@dataclass
class IndexRun:
    """Everything a kind handler needs: where to store, what embeds, how, and whom to tell."""

    library: Library
    encoder: Encoder
    options: IndexOptions
    report: IndexReport
    progress: Progress
    towers: LibraryTowers  # the library's towers by modality (`encoder` is its joint one)
