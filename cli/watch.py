"""`jrsearch index --watch`: the indexer's live-folder loop (`indexer/watch.py`) with a report per batch."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import typer

from jrsearch.cli.render import print_index_report
from jrsearch.indexer.run import IndexOptions, IndexReport
from jrsearch.indexer.watch import watch
from jrsearch.retrieval.encoders import Encoder
from jrsearch.retrieval.library import Library


def watch_index(library: Library, encoder: Encoder, paths: list[Path], options: IndexOptions, as_json: bool) -> None:
    """Index `paths`, then each change under them, printing each run's report (a JSON line with
    --json) until Ctrl-C or SIGTERM (a service manager's stop: ends between batches); the caller
    holds the library's write lock."""
    stop = threading.Event()

    def report(run: IndexReport) -> None:
        if as_json:
            typer.echo(json.dumps(run.to_json()))
        else:
            print_index_report(run)
            typer.echo(f"watching {', '.join(str(p) for p in paths)} (Ctrl-C stops)", err=True)

    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        watch(library, encoder, paths, options, on_batch=report, stop=stop)  # a report per run, no progress bar
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo("stopped watching; everything indexed so far is kept", err=True)
