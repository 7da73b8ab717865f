"""`jrsearch serve`: keep the model and indexes warm and serve the search page and its API."""

from __future__ import annotations

import errno
import socket
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
    print_service_notes,
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
    try:
        listening = bind_port(host, port)  # before the minutes of loading: a busy port is one line, now
    except OSError as exc:
        fail(port_problem(host, port, exc), 2)
    port = listening.getsockname()[1]  # --port 0: the one the system gave
    if index is not None:  # an INDEXDIR from `jrsearch cluster build`, its shards here or on Ray actors
        typer.echo(f"loading the index {index} ...", err=True)
    options = ServiceOptions(nprobe, search_threads=1, address=address, allow_partial=allow_partial,
                             compiled=compiled_fanout)
    service = open_service(library, choice, index, options)
    if index is None:
        typer.echo(f"loading {service.spec.label()} and the indexes of {service.root} ...", err=True)
    app = create_app(service, token=token, allowed_hosts=None if token else LOOPBACK_NAMES,
                     max_upload_bytes=max_upload_mb * 2**20)
    print_service_notes(service)  # what warming found damaged and rebuilt
    typer.echo(f"serving on http://{shown}:{port}  (API docs: /docs{', token required' if token else ''})", err=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
                   ).run(sockets=[listening])


def bind_port(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` as uvicorn binds one, for the server to listen on."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listening = socket.socket(family, kind, proto)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
    except OSError:
        listening.close()
        raise
    listening.set_inheritable(True)
    return listening


def port_problem(host: str, port: int, exc: OSError) -> str:
    """Why `host`:`port` cannot be served on, and what to do, in one line."""
    if isinstance(exc, socket.gaierror):
        return f"--host {host} is not an address of this machine ({exc.strerror}); pass another --host"
    why = "is in use by another program" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
    return f"port {port} on {host} {why}: pass another --port (--port 0 picks a free one)"
