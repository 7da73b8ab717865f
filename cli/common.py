"""Options and helpers shared by every command."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from jrsearch.retrieval.catalog import damaged_error, is_damaged
from jrsearch.retrieval.diskspace import disk_full_error, is_disk_full
from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.types import MediaKind, ModelChoice, ModelSpec

if TYPE_CHECKING:  # the library pulls in SQLAlchemy: too slow to import for `--help`
    from jrsearch.retrieval.library import Library
    from jrsearch.retrieval.service import SearchService

T = TypeVar("T")

LibraryOpt = Annotated[Path | None, typer.Option(
    "--library", envvar="JRSEARCH_LIBRARY", help="Library folder (default: the user data dir).", show_default=False)]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="open_clip model name, e.g. ViT-B-32 or tiny-test (default: the library's, else ViT-B-32).")]
PretrainedOpt = Annotated[str | None, typer.Option(
    "--pretrained", help="open_clip pretrained tag, e.g. laion2b_s34b_b79k; 'none' for random weights.")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint", help="Local open_clip checkpoint file for --model (instead of a pretrained tag).")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 (GPU), bf16 or int8 (CPU).")]
BackendOpt = Annotated[str, typer.Option(
    "--backend", help="auto (the ONNX export on a CPU: OpenVINO for fp32/bf16, ONNX Runtime for int8; "
                      "torch on a GPU), onnx (ONNX Runtime), openvino or torch.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda if present).")]
IndexOpt = Annotated[Path | None, typer.Option(
    "--index", help="Search an INDEXDIR built by `jrsearch cluster build` instead of a library.")]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="With --index: Ray cluster to hold the index shards (HOST:PORT, ray://..., auto).")]
AllowPartialOpt = Annotated[bool, typer.Option(
    "--allow-partial", help="With --index --address: answer when a shard is lost, flagged as partial "
                            "(default: an error).")]
CompiledFanoutOpt = Annotated[bool, typer.Option(
    "--compiled-fanout", help="With --index --address, experimental: fan queries out through a Ray Compiled "
                              "Graph (lower latency on one node; each shard actor keeps polling, using CPU "
                              "while idle; hung on a 2-node test cluster with Ray 2.60).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

# What `query` keeps (filters) and how hard the index looks (nprobe, rerank); `serve` shares NprobeOpt.
UnderOpt = Annotated[Path | None, typer.Option("--under", help="Only results under this folder.")]
GlobOpt = Annotated[str | None, typer.Option("--glob", help="Only paths (or names) matching this glob.")]
AfterOpt = Annotated[str | None, typer.Option(
    "--after", metavar="DATE", help="Only what was taken on or after DATE: YYYY, YYYY-MM, YYYY-MM-DD or "
                                    "ISO 8601 (a date without a zone is local time).")]
BeforeOpt = Annotated[str | None, typer.Option(
    "--before", metavar="DATE", help="Only what was taken before the end of DATE (--before 2024: "
                                     "up to 2024-12-31).")]
NearOpt = Annotated[str | None, typer.Option(
    "--near", metavar="LAT,LON[,KM]", help="Only what was taken within KM (default 1) of a place, "
                                           "in degrees: --near 43.46,11.88,5.")]
CameraOpt = Annotated[str | None, typer.Option(
    "--camera", metavar="TEXT", help="Only what a camera whose make or model contains TEXT took (any case).")]
NprobeOpt = Annotated[int | None, typer.Option(
    help="IVF lists to visit (recall vs speed; default 32). A filtered search visits as many times more or fewer "
         "as this is to 32.")]
RerankOpt = Annotated[int | None, typer.Option(
    "--rerank", min=0,
    help="Candidates re-scored on the exact vectors (default: 100 for SQ8, 1000 for PQ indexes; 0: none).")]


def known_kind(name: str) -> str:
    """`name` if a kind by that name is registered (`indexer/kinds.py`), else a typer error listing them.
    The shipped kinds are checked without importing the registry (a cold query imports no indexer)."""
    if name in {str(kind) for kind in MediaKind}:
        return name
    from jrsearch.indexer.kinds import KIND_HANDLERS

    if name not in KIND_HANDLERS:
        raise typer.BadParameter(f"{name!r} is not a kind; choose from {', '.join(KIND_HANDLERS)}")
    return name


KindOpt = Annotated[str, typer.Option(
    "--kind", callback=known_kind, metavar="KIND",
    help="What to find: image, text, video, audio, or a kind a plugin registered.")]


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handles_errors(command: Callable) -> Callable:
    """Turn a JrsearchError into one line on stderr and exit code 1; Ctrl-C into exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from jrsearch.cli.first_use import announce
        from jrsearch.retrieval.first_use import set_announcer

        logging.getLogger().setLevel(logging.ERROR)  # open_clip logs warnings on the root logger
        set_announcer(announce)  # a model's one-time export says so on stderr
        try:
            return command(*args, **kwargs)
        except JrsearchError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            typer.echo("interrupted; everything committed so far is kept — run the same command again to resume",
                       err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            sys.stderr.close()
            raise typer.Exit(0) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a full disk met where no step gave it a size: still one line
            from jrsearch.retrieval.paths import DB_NAME, default_library_dir

            if is_damaged(exc):  # a damaged page met mid-command (library.db: the one SQLite file)
                fail(str(damaged_error((kwargs.get("library") or default_library_dir()) / DB_NAME, exc)))
            if not is_disk_full(exc):
                raise
            fail(str(disk_full_error(kwargs.get("library") or default_library_dir(), f"`jrsearch {command.__name__}`")))

    return wrapper


def resolve_model(library: Library | None, choice: ModelChoice) -> ModelSpec:
    """The model a command uses: explicit options first, then the library's, then the default."""
    from jrsearch.retrieval.service import choose_model

    stored = library.model() if library is not None else None
    return choose_model(choice, stored[0] if stored else None)


MODEL_OPTIONS: dict[str, tuple[object, object]] = {  # ModelChoice's fields as options: (annotation, default)
    "model": (ModelOpt, None), "pretrained": (PretrainedOpt, None), "checkpoint": (CheckpointOpt, None),
    "precision": (PrecisionOpt, "auto"), "device": (DeviceOpt, None), "backend": (BackendOpt, "auto"),
}


MODEL_CHOICE = ModelChoice()  # a command's `choice` parameter's default, replaced by `model_options`


def model_options(*fields: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Give a command the model options (`fields`, default: all of `ModelChoice`'s) in place of its
    `choice: ModelChoice` parameter, which receives them as one object: the options are declared once."""
    names = fields or tuple(MODEL_OPTIONS)

    def decorate(command: Callable[..., T]) -> Callable[..., T]:
        signature = inspect.signature(command, eval_str=True)
        options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=MODEL_OPTIONS[name][1],
                                     annotation=MODEL_OPTIONS[name][0]) for name in names]
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            params.extend(options if param.name == "choice" else [param.replace(kind=param.KEYWORD_ONLY)])

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            choice = ModelChoice(**{name: kwargs.pop(name) for name in names if name in kwargs})
            if choice.model is not None:  # an unknown name or tag: one line now, before any folder is made
                from jrsearch.retrieval.model_check import check_choice

                check_choice(choice)
            return command(*args, choice=choice, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


@dataclass(frozen=True)
class ServiceOptions:
    """How `query` and `serve` open what they search: `--nprobe` (the default for every search),
    faiss threads per search, and for an INDEXDIR `--address`, `--allow-partial`, `--compiled-fanout`."""

    nprobe: int | None = None
    search_threads: int | None = None
    address: str | None = None
    allow_partial: bool = False
    compiled: bool = False
    numpy_text: bool = True  # False: a named model, device, precision or backend also embeds text


def open_service(library: Path | None, choice: ModelChoice, index: Path | None = None,
                 options: ServiceOptions = ServiceOptions()) -> SearchService:
    """The service a command searches: an INDEXDIR's (`--index`) or the library's."""
    if index is not None:
        from jrsearch.retrieval.cluster.search import ClusterService

        return ClusterService(index, address=options.address, nprobe=options.nprobe,
                              allow_partial=options.allow_partial, device=choice.device,
                              precision=choice.precision, compiled=options.compiled)
    from jrsearch.retrieval.service import LibraryService

    return LibraryService.open(library, choice, nprobe=options.nprobe, search_threads=options.search_threads,
                               numpy_text=options.numpy_text)


def print_service_notes(service: SearchService) -> None:
    """One `note:` on stderr per damaged part a library's service found and rebuilt (an index file
    rebuilt in memory from the shards, files marked to index again); an INDEXDIR's has none."""
    from jrsearch.retrieval.service import LibraryService

    for note in service.library.notes if isinstance(service, LibraryService) else []:
        typer.echo(f"note: {note}", err=True)
