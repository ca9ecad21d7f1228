"""`samfast serve`: the local segmentation service for planning-system plug-ins (see samfast.serve)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from samfast.cli._common import guarded
from samfast.cli.bench import Precision
from samfast.cli.segment import Backend, Device, Model
from samfast.errors import InputError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@guarded
def serve(
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="Key every request must send as X-API-Key (or $SAMFAST_API_KEY)."),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8765,
    max_sessions: Annotated[int, typer.Option("--max-sessions", help="Open volumes kept (LRU evicted).")] = 4,
    cache_slices: Annotated[
        int,
        typer.Option("--cache-slices", help="Slice embeddings kept per session (4 MiB each for LiteMedSAM)."),
    ] = 16,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest request body.")] = 256.0,
    model: Model = "litemedsam",
    backend: Backend = None,
    precision: Precision = None,
    device: Device = "cpu",
) -> None:
    """Serve sessions over HTTP: open a volume, click/box -> mask, undo, RTSTRUCT (OpenAPI at /docs)."""
    api_key = api_key or os.environ.get("SAMFAST_API_KEY")
    if not api_key:
        raise InputError("give --api-key KEY (or set SAMFAST_API_KEY); every request must carry it")
    if not 1 <= port <= 65535 or max_sessions < 1 or cache_slices < 0 or max_upload_mb <= 0:
        raise InputError(
            "port must be 1-65535, --max-sessions >= 1, --cache-slices >= 0, --max-upload-mb > 0"
        )
    import uvicorn

    from samfast import Predictor
    from samfast.serve.app import create_app

    if len(api_key) < 16:
        typer.echo("warning: an API key shorter than 16 characters is easy to guess", err=True)
    if host not in LOOPBACK:
        typer.echo(f"warning: listening on {host}, reachable from other machines; plain HTTP", err=True)
    predictor = Predictor(
        model, backend=backend, device=device, precision=precision, log=lambda m: typer.echo(m, err=True)
    )
    app = create_app(predictor, api_key, max_sessions, cache_slices, int(max_upload_mb * 2**20))
    uvicorn.run(app, host=host, port=port, log_level="info")
