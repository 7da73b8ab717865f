"""`jrsearch`: index media, search it in every direction, see what is indexed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from jrsearch.cli.common import (
    MODEL_CHOICE,
    AddressOpt,
    AfterOpt,
    AllowPartialOpt,
    BeforeOpt,
    CameraOpt,
    GlobOpt,
    IndexOpt,
    JsonOpt,
    KindOpt,
    LibraryOpt,
    NearOpt,
    NprobeOpt,
    RerankOpt,
    ServiceOptions,
    UnderOpt,
    fail,
    handles_errors,
    model_options,
    open_service,
    print_service_notes,
    resolve_model,
)
from jrsearch.cli.terms import MAIN_QUERY, AddOpt, LikeOpt, PreviewOpt, SubtractOpt, main_query, query_terms
from jrsearch.retrieval.types import MediaKind, ModelChoice

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Cross-modal search over your photos, texts, videos and sounds.")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version  # only here: its import alone costs 10-30 ms

        typer.echo(f"jrsearch {version('jrsearch')}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="Print the version and exit.")] = False) -> None:
    pass


@app.command()
@handles_errors
@model_options()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders or files: images, videos, audio, or text corpora "
                                                     "(.txt one per line, .jsonl, .tsv).")],
    library: LibraryOpt = None,
    choice: ModelChoice = MODEL_CHOICE,
    batch_size: Annotated[int, typer.Option(help="Images per model batch.")] = 64,
    workers: Annotated[int, typer.Option(help="Decode threads.")] = 2,
    include_hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders.")] = False,
    audio_model: Annotated[Path | None, typer.Option(
        "--audio-model", help="Audio tower checkpoint (`jrsearch train audio`) for sound files and video "
                              "soundtracks; the library remembers it.")] = None,
    video_fps: Annotated[float, typer.Option("--video-fps", min=0.01, help="Video frames sampled per second "
                                                                          "(scene changes are added).")] = 1.0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try files that failed before again, "
                                                                      "even if they have not changed.")] = False,
    as_json: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", help="Then keep watching PATHS: index files as they appear "
                                                        "and change, forget them as they go (Ctrl-C stops).")] = False,
) -> None:
    """Embed every media file under PATHS; unchanged files are skipped, deleted ones forgotten."""
    from jrsearch.cli.render import RichProgress, print_index_report
    from jrsearch.indexer.pipeline import IndexOptions, run_index
    from jrsearch.retrieval.encoders import LazyEncoder, check_runnable, load_encoder
    from jrsearch.retrieval.index import require_faiss
    from jrsearch.retrieval.library import Library

    for path in paths:
        if not path.exists():
            fail(f"{path} does not exist; pass a folder or file to index")
    require_faiss()
    if not Library.exists(library):  # a new library: what its model needs is checked before its folder is made
        check_runnable(resolve_model(None, choice), choice.device, choice.backend)
    lib = Library.open(library, create=True)
    with lib.writing():
        spec = resolve_model(lib, choice)
        lib.check_model(spec)  # before spending seconds loading the wrong model
        check_runnable(spec, choice.device, choice.backend)  # torch missing for a first export: say so now
        encoder = LazyEncoder(spec, lambda: load_encoder(spec, device=choice.device, precision=choice.precision,
                                                         backend=choice.backend))
        options = IndexOptions(batch_size=batch_size, workers=workers, include_hidden=include_hidden,
                               audio_model=audio_model, video_fps=video_fps, retry_failed=retry_failed)
        if watch:
            from jrsearch.cli.watch import watch_index

            return watch_index(lib, encoder, [p.resolve() for p in paths], options, as_json)
        with RichProgress(enabled=not as_json) as progress:
            report = run_index(lib, encoder, [p.resolve() for p in paths], options, progress)
    if encoder.loaded is not None:
        report.notes[:0] = encoder.loaded.notes  # e.g. ONNX Runtime unavailable, text-tower export not written
    report.notes[:0] = lib.notes  # damaged shards or index files found, and what was done
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        print_index_report(report)
        for note in report.notes:
            typer.echo(f"note: {note}")


@app.command()
@handles_errors
@model_options()
def query(
    text: Annotated[str | None, typer.Argument(help="What to search for, in words.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Search with an image (a file or an http(s) URL) "
                                                              "instead.")] = None,
    audio: Annotated[Path | None, typer.Option("--audio", help="Search with a sound (wav, flac, mp3, ...).")] = None,
    like: LikeOpt = None,
    add: AddOpt = None,
    subtract: SubtractOpt = None,
    kind: KindOpt = MediaKind.IMAGE,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many results.")] = 10,
    under: UnderOpt = None,
    glob: GlobOpt = None,
    after: AfterOpt = None,
    before: BeforeOpt = None,
    near: NearOpt = None,
    camera: CameraOpt = None,
    nprobe: NprobeOpt = None,
    rerank: RerankOpt = None,
    library: LibraryOpt = None,
    choice: ModelChoice = MODEL_CHOICE,
    index: IndexOpt = None,
    address: AddressOpt = None,
    allow_partial: AllowPartialOpt = False,
    as_json: JsonOpt = False,
    preview: PreviewOpt = False,
    paths_only: Annotated[bool, typer.Option("--paths-only", "-f", help="Print the paths alone, one a line.")] = False,
) -> None:
    """Search the library: by text (TEXT), by example (--image, --audio), like an indexed file (--like),
    or a combination (--add, --subtract)."""
    from jrsearch.retrieval.errors import QueryError
    from jrsearch.retrieval.request import Filters, SearchRequest

    queries = [q for q in (text, image, audio, like) if q is not None]
    if len(queries) > 1 or not (queries or add):
        return fail(MAIN_QUERY)
    if index is not None and audio is not None:
        return fail("give a TEXT query or --image PATH (an INDEXDIR holds images only: no --audio)")
    try:
        filters = Filters.make(under, glob, after=after, before=before, near=near, camera=camera)
    except QueryError as exc:  # a usage error: exit 2, like typer's own
        return fail(str(exc), 2)
    try:
        terms = query_terms(image, like, add, subtract)
    except QueryError as exc:
        return fail(str(exc), 2)
    request = SearchRequest(kind, top_k, filters, nprobe, rerank, terms)
    main = main_query(text, image, audio)
    if main is not None and main[0] != "text":  # refused before any model or index is opened
        from jrsearch.retrieval.query_file import check_query_file

        check_query_file(Path(main[1]), main[0])
    if text is not None and not terms and not preview and index is None and choice.is_default:
        from jrsearch.cli.quick import quick_query  # no torch, no ORM: a text query in a fresh process in < 1 s

        if quick_query(text, request, library, as_json, paths_only):
            return None
    from jrsearch.cli.render import print_result_set

    options = ServiceOptions(nprobe, address=address, allow_partial=allow_partial, numpy_text=False)
    service = open_service(library, choice, index, options)
    results = service.search(service.embed(*main) if main else None, request)
    print_result_set(results, as_json, paths_only)
    print_service_notes(service)
    if preview and not as_json:
        from jrsearch.cli.preview import print_previews

        print_previews(service, results)
    if text is not None and index is None:
        from jrsearch.cli.quick import print_language_hint

        print_language_hint(text, service.spec.name)
    return None


@app.command()
@handles_errors
def status(library: LibraryOpt = None, as_json: JsonOpt = False,
           failures: Annotated[bool, typer.Option("--failures", help="List failed files and why.")] = False) -> None:
    """What is indexed, with which model and index type, and its size on disk."""
    from jrsearch.cli.render import print_status
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.paths import display_path

    lib = Library.open(library)
    info = lib.status()
    if failures:
        from jrsearch.retrieval.walk_record import read_walk_record

        left_out = read_walk_record(lib.root).failures()  # symlinks out of the roots, unreadable folders
        info["failures"] = [{"path": display_path(p), "error": e} for p, e in lib.failures() + left_out]
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        print_status(info)


import sys  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from typing import Any, cast  # noqa: E402

from jrsearch.retrieval.plugins import COMMANDS_GROUP, PluginRegistry  # noqa: E402


def _accept_command(name: str, command: object, registered: Mapping[str, object]) -> object:
    if not (isinstance(command, typer.Typer) or callable(command)):
        raise TypeError(f"command {name!r}: {command!r} is neither a typer.Typer nor a function")
    if name in registered or name in {"index", "query", "status"}:
        raise ValueError(f"a command named {name!r} is already registered")
    return command


# The commands beyond index, query and status: `jrsearch.commands` entry points (retrieval/plugins.py),
# jrsearch's own (serve, bench, train, cluster) and a plugin's alike.
COMMANDS: PluginRegistry[object] = PluginRegistry(COMMANDS_GROUP, _accept_command,
                                                  order=("serve", "bench", "train", "cluster", "check"))
_added: set[str] = set()


def add_commands(commands: Mapping[str, object]) -> None:
    """Put registered commands on `app`: a `typer.Typer` as a group, a function as a command."""
    for name, command in commands.items():
        if name not in _added:
            _added.add(name)
            if isinstance(command, typer.Typer):
                app.add_typer(command, name=name)
            else:
                app.command(name=name)(cast(Callable[..., Any], command))


add_commands(COMMANDS.shipped())  # read from jrsearch's own metadata: no scan of other distributions


def main() -> None:
    from jrsearch.cli import quick

    quick.EXIT_WHEN_ANSWERED = True
    named = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if named not in {"index", "query", "status", *COMMANDS.shipped()}:
        add_commands(COMMANDS.outside())  # a plugin's command, or --help listing them all
    app()


if __name__ == "__main__":
    main()
