"""Live folders: `jrsearch index --watch PATHS` keeps a library current as files appear, change and go.

watchdog reports file-system events (inotify, FSEvents, ReadDirectoryChangesW); they are gathered
until the folders have been quiet for `debounce_s` (a copy of a thousand photos is one batch, a
file still being written is indexed once it stops changing), and each batch runs the ordinary
incremental pipeline (`pipeline.run_index`) over the folders the events touched: new and modified
files embedded, deleted ones forgotten, every batch committed and the indexes saved, which moves
the store's generation on, so a running `serve` loads them on its next request. Stopping (`stop`
set, or Ctrl-C) ends between batches or inside one like an interrupted `jrsearch index`: what was
committed stays.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from jrsearch.indexer.pipeline import run_index
from jrsearch.indexer.run import IndexOptions, IndexReport, Progress
from jrsearch.retrieval.encoders import Encoder
from jrsearch.retrieval.library import Library

DEBOUNCE_S = 1.0  # quiet time before a batch runs


class ChangedPaths(FileSystemEventHandler):
    """Paths watchdog reported since the last batch, and an event that says there are some."""

    def __init__(self, ignore: Path) -> None:
        super().__init__()
        self._ignore = os.path.join(str(ignore), "")  # the library's own files, if it lives inside a watched folder
        self._lock = threading.Lock()
        self._paths: set[Path] = set()
        self.arrived = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Every event's paths (a move has two)."""
        paths = [event.src_path, event.dest_path]
        fresh = {Path(os.fsdecode(p)) for p in paths if p and not os.fsdecode(p).startswith(self._ignore)}
        if fresh and event.event_type not in ("opened", "closed_no_write"):
            with self._lock:
                self._paths |= fresh
            self.arrived.set()

    def take(self) -> set[Path]:
        with self._lock:
            paths, self._paths = self._paths, set()
            self.arrived.clear()
        return paths


def roots_to_index(changed: Iterable[Path], roots: list[Path]) -> list[Path]:
    """The smallest set of the watched `roots` (or folders inside them) that holds every changed
    path: a watched file itself, else the nearest existing folder above the change, so that the
    pipeline both finds what appeared and forgets what went."""
    files = {r for r in roots if r.is_file()}
    folders = [r for r in roots if r not in files]
    chosen: set[Path] = set()
    for path in changed:
        if path in files or path in roots:
            chosen.add(path if path.exists() else path.parent)
            continue
        home = next((r for r in folders if path.is_relative_to(r)), None)
        if home is None:
            continue
        folder = path if path.is_dir() else path.parent
        while folder != home and not folder.is_dir():
            folder = folder.parent
        chosen.add(folder)
    return [p for p in sorted(chosen) if not any(p != q and q.is_dir() and p.is_relative_to(q) for q in chosen)]


def watch(library: Library, encoder: Encoder, roots: list[Path], options: IndexOptions | None = None,
          on_batch: Callable[[IndexReport], None] | None = None, stop: threading.Event | None = None,
          debounce_s: float = DEBOUNCE_S, progress: Progress | None = None) -> None:
    """Index `roots` once, then again wherever they change, until `stop` is set (or Ctrl-C).
    `on_batch` sees each run's report (the first one's too); the caller holds the write lock."""
    from watchdog.observers import Observer  # the platform's backend, chosen on import

    stop = stop or threading.Event()
    changed = ChangedPaths(library.root)
    observer = Observer()
    for root in {r if r.is_dir() else r.parent for r in roots}:
        observer.schedule(changed, str(root), recursive=True)
    observer.start()  # before the first run: nothing that changes during it is missed
    try:
        report = run_index(library, encoder, roots, options, progress)
        if on_batch:
            on_batch(report)
        while not stop.is_set():
            if not changed.arrived.wait(0.2):
                continue
            while changed.arrived.is_set() and not stop.is_set():  # debounce: until quiet for debounce_s
                changed.arrived.clear()
                stop.wait(debounce_s)
            batch = roots_to_index(changed.take(), roots)
            if batch and not stop.is_set():
                report = run_index(library, encoder, batch, options)
                if on_batch:
                    on_batch(report)
    finally:
        observer.stop()
        observer.join()
