"""`jrsearch query TEXT` in a fresh process without torch or SQLAlchemy (see retrieval/quick_search.py).

`query` calls `quick_query` first; False means "take the normal path" and nothing was printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from retrieval.types import MediaKind, SearchResult


def quick_query(text: str, kind: MediaKind, top_k: int, under: Path | None, glob: str | None, nprobe: int | None,
                library: Path | None, as_json: bool) -> bool:
    """Answer a text query on the lean path and print it as `query` does; False where it cannot."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one query row: BLAS threads only contend (9x here)
    from retrieval.quick_search import default_library_dir, quick_text_search

    path_filter = None
    if under is not None or glob is not None:
        from retrieval.engine import PathFilter  # imports SQLAlchemy; still no torch

        path_filter = PathFilter.make(under, glob)
    results = quick_text_search(library or default_library_dir(), text, kind, top_k, nprobe, path_filter)
    if results is None:
        return False
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print_results(results)
    return True


def print_results(results: list[SearchResult]) -> None:
    """cli.render.print_results, which cannot be imported cheaply: cli.render imports indexer.pipeline."""
    from rich.console import Console
    from rich.table import Table

    out = Console()
    if not results:
        out.print("no results")
        return
    table = Table(box=None, show_header=True, header_style="bold")
    for name in ("#", "score", "path", "detail"):
        table.add_column(name, overflow="fold")
    for r in results:
        detail = ""
        if r.text is not None:
            detail = f"line {r.line}: {r.text}"
        elif r.start_s is not None:
            detail = f"{r.start_s:.1f}-{r.end_s:.1f} s"
        table.add_row(str(r.rank), f"{r.score:.4f}", r.path, detail)
    out.print(table)
