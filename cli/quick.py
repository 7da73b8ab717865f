"""`jrsearch query TEXT` in a fresh process without torch or SQLAlchemy (see retrieval/quick_search.py).

`query` calls `quick_query` first; False means "take the normal path" and nothing was printed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jrsearch.retrieval.settings import OPENBLAS_NUM_THREADS

if TYPE_CHECKING:
    from jrsearch.retrieval.request import SearchRequest

EXIT_WHEN_ANSWERED = False  # set by the `jrsearch` entry point (`cli.main.main`), never by in-process callers


def quick_query(text: str, request: SearchRequest, library: Path | None, as_json: bool,
                paths_only: bool = False) -> bool:
    """Answer a text query on the lean path and print it as `query` does; False where it cannot."""
    OPENBLAS_NUM_THREADS.set_default("1")  # one query row: BLAS threads only contend (9x here)
    from jrsearch.retrieval.paths import default_library_dir
    from jrsearch.retrieval.quick_search import quick_text_search

    results = quick_text_search(library or default_library_dir(), text, request)
    if results is None:
        return False
    if as_json:  # without importing rich (cli/render): the cold path's JSON is plain
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        from jrsearch.cli.render import print_results

        print_results(results, paths_only)
    if not text.isascii():
        from jrsearch.retrieval.quick_search import library_model_name

        print_language_hint(text, library_model_name(library or default_library_dir()))
    if EXIT_WHEN_ANSWERED:
        # The answer is out; tearing the interpreter down (module finalisation, freeing faiss and
        # the mapped tower) would add 40-100 ms to a 0.3 s command, so end the process here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return True


def print_language_hint(text: str, model_name: str | None) -> None:
    """One line on stderr where an English-only model's library was asked in another script."""
    from jrsearch.retrieval.query_language import english_only_hint

    hint = english_only_hint(text, model_name) if model_name else None
    if hint:
        typer.echo(f"note: {hint}", err=True)

