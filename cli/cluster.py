"""`jrsearch cluster embed|build`; `query|serve --index` search the INDEXDIR (`cluster/search.ClusterService`).

Ray (the `cluster` extra) is imported by the commands when they run, never when the CLI loads.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from jrsearch.cli.common import MODEL_CHOICE, JsonOpt, fail, handles_errors, model_options
from jrsearch.retrieval.types import ModelChoice

cluster_app = typer.Typer(no_args_is_help=True, help="Embed, index and serve across a Ray cluster "
                                                     "(pip install 'jrsearch\\[cluster]').")

ClusterAddressOpt = Annotated[str | None, typer.Option(
    "--address", help="Ray cluster to use: HOST:PORT, ray://HOST:10001 or auto (the one running here); "
                      "default: start a local one.")]
CpusOpt = Annotated[int | None, typer.Option("--num-cpus", min=1, help="CPUs of a local cluster started here.")]


@contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """While a Ray job runs, everything written to stdout goes to stderr instead: Ray's own lines and
    its workers' (a dead worker's last words, forwarded to the driver), Python's and the processes'
    it starts (they inherit file descriptor 1). stdout is then left for the one JSON document."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved_fd, saved_stdout = os.dup(1), sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        sys.stdout = saved_stdout


def _progress_printer(enabled: bool):
    """A one-line progress report on stderr: shards done of total, items, items/s."""
    from jrsearch.cli.render import err

    last = [0.0]

    def show(done: int, total: int, items: int, seconds: float) -> None:
        if enabled and (seconds - last[0] >= 1.0 or done == total):
            last[0] = seconds
            err.print(f"shards {done}/{total}  items {items:,}  {items / max(seconds, 1e-9):,.1f} items/s",
                      highlight=False)

    return show


@cluster_app.command()
@handles_errors
@model_options("model", "pretrained", "precision")
def embed(
    sources: Annotated[list[str], typer.Argument(help="Folders, file lists (.txt), parquet tables or webdataset "
                                                      ".tar shards; local paths or fsspec URLs (s3://...).")],
    out: Annotated[str, typer.Option("--out", help="Dataset folder or URL (clip-retrieval layout).")],
    choice: ModelChoice = MODEL_CHOICE,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Images per output shard.")] = 100_000,
    actors: Annotated[int | None, typer.Option(
        "--actors", min=1, help="Embed actors (default: one per GPU; without GPUs one per 4 CPUs).")] = None,
    actor_cpus: Annotated[float, typer.Option("--actor-cpus", min=0.1, help="CPUs per CPU embed actor.")] = 1.0,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per model batch.")] = None,
    address: ClusterAddressOpt = None,
    num_cpus: CpusOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Embed images on a Ray cluster into float16 .npy shards + parquet metadata; reruns resume."""
    from jrsearch.cli.common import resolve_model
    from jrsearch.indexer.cluster.embed import EmbedOptions, run_embed

    spec = resolve_model(None, choice)
    options = EmbedOptions(shard_size=shard_size, address=address, num_cpus=num_cpus, actors=actors,
                           actor_cpus=actor_cpus, batch_size=batch_size, precision=choice.precision)
    with _stdout_to_stderr(as_json):
        report = run_embed(sources, out, spec, options, _progress_printer(not as_json))
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    typer.echo(f"embedded {report.embedded:,} images into {report.shards_written} new shard(s) "
               f"({report.shards_skipped} already done, {report.shards_total} in all), failed "
               f"{len(report.failed)}, in {report.seconds:.1f} s on {report.actors}")
    for path, error in report.failed[:20]:
        typer.echo(f"  failed: {path}: {error}")


@cluster_app.command()
@handles_errors
def build(
    dataset: Annotated[str, typer.Argument(help="Dataset folder or URL written by `jrsearch cluster embed`.")],
    out: Annotated[Path, typer.Option("--out", help="Index folder (INDEXDIR) to write.")],
    factory: Annotated[str | None, typer.Option(
        "--factory", help="faiss index_factory string (an IVF index); default: the library's choice for the "
                          "vectors, dimension and --memory.")] = None,
    memory: Annotated[str, typer.Option(
        "--memory", help="RAM the serving nodes give the index, together (e.g. 64G, 512G): picks the codes "
                         "when --factory is not given.")] = "64G",
    shards: Annotated[int | None, typer.Option(
        "--shards", min=1, help="Serving shards: 1 merges into one on-disk index; default: by size "
                                "(one per 64 GiB of codes).")] = None,
    nprobe: Annotated[int, typer.Option(help="Default IVF lists visited per query.")] = 32,
    single: Annotated[bool, typer.Option("--single", help="Build in this process, without Ray.")] = False,
    address: ClusterAddressOpt = None,
    num_cpus: CpusOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train an IVF index on a sample, add the shards in parallel, merge into on-disk serving shards."""
    from jrsearch.indexer.cluster.build import BuildOptions, build_single, run_build
    from jrsearch.retrieval.index import parse_size

    budget = parse_size(memory)
    if budget is None:
        return fail(f"--memory {memory!r} is not a size; give bytes or a number with K, M, G or T (e.g. 64G)")
    options = BuildOptions(factory=factory, memory_budget=budget, serving_shards=shards, nprobe=nprobe,
                           address=address, num_cpus=num_cpus)
    with _stdout_to_stderr(as_json):
        report = build_single(dataset, out, options) if single else run_build(dataset, out, options)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    typer.echo(f"indexed {report.vectors:,} vectors as {report.factory} in {report.serving_shards} serving "
               f"shard(s), {report.index_bytes / 2**20:,.1f} MiB, in {report.seconds['total']:.1f} s")
