"""`jrsearch serve`: keep the model and indexes warm and serve the search page and its API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jrsearch.cli.common import (
    MODEL_CHOICE,
    AddressOpt,
    AllowPartialOpt,
    CompiledFanoutOpt,
    IndexOpt,
    LibraryOpt,
    NprobeOpt,
    ServiceOptions,
    fail,
    handles_errors,
    model_options,
    open_service,
)
from jrsearch.retrieval.types import ModelChoice


@handles_errors
@model_options()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="File holding the access token (else $JRSEARCH_TOKEN); "
                             "required when --host is not loopback.")] = None,
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", min=1, help="Largest query upload, MiB.")] = 20,
    nprobe: NprobeOpt = None,
    library: LibraryOpt = None,
    choice: ModelChoice = MODEL_CHOICE,
    index: IndexOpt = None,
    address: AddressOpt = None,
    allow_partial: AllowPartialOpt = False,
    compiled_fanout: CompiledFanoutOpt = False,
) -> None:
    """Serve a search page with thumbnails and an HTTP API (OpenAPI at /docs)."""
    # faiss searches one query row on one thread (search_threads=1 below: on a busy 2-core machine a
    # 10k flat search took 36 ms on 2 threads, 2 ms on 1). The numpy text tower keeps BLAS's threads:
    # on an idle 2-core machine they cut a 100k-library query's p50 from 49 ms to 36 ms
    # (OPENBLAS_NUM_THREADS=1 trades that for throughput under many concurrent clients).
    from jrsearch.retrieval.extras import require

    for module in ("fastapi", "python_multipart", "uvicorn"):
        require(module, "serve", "jrsearch serve")
    import uvicorn

    from jrsearch.cli.web.app import create_app
    from jrsearch.cli.web.security import LOOPBACK_NAMES, is_loopback, load_token

    token = load_token(token_file)
    loopback = is_loopback(host)
    if not loopback and token is None:
        fail(f"--host {host} is reachable from other machines: pass --token-file FILE (or set JRSEARCH_TOKEN) "
             f"so that only people with the token can search, or keep the default --host 127.0.0.1")
    shown = f"[{host}]" if ":" in host else host
    if index is not None:  # an INDEXDIR from `jrsearch cluster build`, its shards here or on Ray actors
        typer.echo(f"loading the index {index} ...", err=True)
    options = ServiceOptions(nprobe, search_threads=1, address=address, allow_partial=allow_partial,
                             compiled=compiled_fanout)
    service = open_service(library, choice, index, options)
    if index is None:
        typer.echo(f"loading {service.spec.label()} and the indexes of {service.root} ...", err=True)
    app = create_app(service, token=token, allowed_hosts=None if token else LOOPBACK_NAMES,
                     max_upload_bytes=max_upload_mb * 2**20)
    typer.echo(f"serving on http://{shown}:{port}  (API docs: /docs{', token required' if token else ''})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
