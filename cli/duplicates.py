"""`jrsearch duplicates`: groups of exact and near-duplicate files (`retrieval/duplicates.py`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from jrsearch.cli.common import JsonOpt, KindOpt, LibraryOpt, handles_errors
from jrsearch.retrieval.types import MediaKind

ThresholdOpt = Annotated[float, typer.Option(
    "--threshold", min=-1.0, max=1.0,
    help="Cosine similarity at or above which two files count as copies (default 0.95: resized, "
         "recompressed or slightly cropped copies of one picture; lower it for similar shots).")]
NeighboursOpt = Annotated[int, typer.Option(
    "--neighbours", min=1, max=1000, help="Nearest neighbours looked at per file.")]


@handles_errors
def duplicates(library: LibraryOpt = None, threshold: ThresholdOpt = 0.95, kind: KindOpt = MediaKind.IMAGE,
               neighbours: NeighboursOpt = 10, as_json: JsonOpt = False) -> None:
    """List groups of exact and near-duplicate files, with how similar each pair is."""
    from jrsearch.cli.render import print_duplicate_groups
    from jrsearch.retrieval.duplicates import find_duplicates
    from jrsearch.retrieval.library import Library

    lib = Library.open(library)
    try:
        groups = find_duplicates(lib.index(kind), lib.shards.source(kind), lib.hits, threshold, neighbours)
    finally:
        lib.close()
    if as_json:
        typer.echo(json.dumps([g.to_json() for g in groups], indent=2))
    else:
        print_duplicate_groups(groups)
