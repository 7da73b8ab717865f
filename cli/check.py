"""`jrsearch check [--repair] [--json] [LIBRARY]`: is every stored part of the library sound?

Exit code 0: sound (or, with --repair, everything damaged was repaired); 1: damage remains. The
checks and repairs are `retrieval/integrity.py`'s; this command prints them and, after a repair,
embeds the files whose vectors were damaged again through the normal incremental indexing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from jrsearch.cli.common import JsonOpt, LibraryOpt, handles_errors
from jrsearch.retrieval.paths import default_library_dir


@handles_errors
def check(
    library_dir: Annotated[Path | None, typer.Argument(metavar="[LIBRARY]", help="The library to check "
                                                       "(default: --library, else the default library).")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Rebuild what is derived and embed files whose "
                                                          "vectors are damaged again.")] = False,
    as_json: JsonOpt = False,
    library: LibraryOpt = None,
) -> None:
    """Check the catalog, the vector shards, the indexes and the model's exports (like `git fsck`)."""
    from jrsearch.retrieval.integrity import check_library
    from jrsearch.retrieval.library import Library

    root = (library_dir or library or default_library_dir()).expanduser()
    if not (root / "library.db").exists():
        Library.open(root)  # raises the usual "no library at ..." error
    report = check_library(root, repair=repair)
    notes: list[str] = []
    if repair and (report.reindex or report.reexport):
        notes = _embed_again(root, report.reindex)
    if as_json:
        typer.echo(json.dumps({**report.to_json(), "notes": notes}, indent=2))
    else:
        checked = ", ".join(f"{n} {what}" for what, n in report.checked.items())
        typer.echo(f"checked {root}: {checked}")
        for finding in report.findings:
            typer.echo(finding.line())
        for note in notes:
            typer.echo(f"note: {note}")
        typer.echo("sound" if report.sound else "damage found")
    if not report.sound:
        raise typer.Exit(1)


def _embed_again(root: Path, paths: list[str]) -> list[str]:
    """Index the marked files that are still on disk (and load the model: a removed export is written
    again); notes on what happened."""
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.encoders import LazyEncoder, load_encoder
    from jrsearch.retrieval.library import Library

    lib = Library.open(root)
    try:
        model = lib.model()
        if model is None:
            return []
        encoder = LazyEncoder(model.spec, lambda: load_encoder(model.spec))
        present = [Path(p) for p in paths if Path(p).is_file()]
        notes = [f"{p}: no longer on disk; it stays listed by `jrsearch status --failures`"
                 for p in paths if not Path(p).is_file()]
        with lib.writing():
            if present:
                report = run_index(lib, encoder, present)
                notes.append(f"embedded {report.indexed} file(s) again")
            else:
                encoder.get()  # loading the model writes a removed export again
        loaded = encoder.loaded
        return notes + (loaded.notes if loaded is not None else []) + lib.notes
    finally:
        lib.close()
