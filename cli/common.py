"""Options and helpers shared by every command."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from jrsearch.retrieval.diskspace import disk_full_error, is_disk_full
from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.types import MediaKind, ModelSpec

if TYPE_CHECKING:  # the library pulls in SQLAlchemy: too slow to import for `--help`
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.library import Library

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
        logging.getLogger().setLevel(logging.ERROR)  # open_clip logs warnings on the root logger
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
            if not is_disk_full(exc):
                raise
            from jrsearch.retrieval.paths import default_library_dir

            fail(str(disk_full_error(kwargs.get("library") or default_library_dir(), f"`jrsearch {command.__name__}`")))

    return wrapper


def resolve_model(library: Library | None, model: str | None, pretrained: str | None,
                  checkpoint: Path | None) -> ModelSpec:
    """The model a command uses: explicit options first, then the library's, then the default."""
    from jrsearch.retrieval.encoders import DEFAULT_MODEL, SHIPPED_MODELS

    stored = library.model() if library is not None else None
    built = stored[0] if stored else None
    name = model or (built.name if built else DEFAULT_MODEL.name)
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise JrsearchError(f"checkpoint {checkpoint} does not exist; "
                                "pass --checkpoint PATH to an open_clip checkpoint")
        return ModelSpec(name, str(checkpoint.resolve()))
    if pretrained is not None:
        return ModelSpec(name, "" if pretrained.lower() == "none" else pretrained)
    if built and built.name == name:
        return built
    if name == DEFAULT_MODEL.name:
        return DEFAULT_MODEL
    if name in SHIPPED_MODELS:
        return SHIPPED_MODELS[name]
    raise JrsearchError(f"pass --pretrained TAG (or --checkpoint PATH) for model '{name}'")


def open_engine(library: Path | None, model: str | None, pretrained: str | None, checkpoint: Path | None,
                precision: str, device: str | None, backend: str, nprobe: int | None = None,
                rerank: int | None = None) -> tuple[Library, SearchEngine]:
    """Open a library and the engine that searches it, as `query` and `serve` take them from their options."""
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.library import Library

    lib = Library.open(library)
    if nprobe:
        lib.nprobe = nprobe
    lib.rerank = rerank
    explicit = resolve_model(lib, model, pretrained, checkpoint) if (model or pretrained or checkpoint) else None
    return lib, SearchEngine(lib, model=explicit, precision=precision, device=device, backend=backend)
