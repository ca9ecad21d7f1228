"""`samfast serve`: the local segmentation service for planning-system plug-ins (see samfast.serve)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from samfast.cli._common import guarded, open_predictor
from samfast.cli.options import Backend, Device, Model, Precision
from samfast.errors import InputError

LOOPBACK = ("127.0.0.1", "::1", "localhost")
KEY_ENV = "SAMFAST_API_KEY"


def read_api_key(api_key: str | None, key_file: Path | None) -> str:
    """The key from --api-key-file, $SAMFAST_API_KEY or --api-key (the first two stay out of `ps`)."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(
                f"--api-key-file {key_file}: cannot read it ({getattr(error, 'strerror', None) or error})"
            ) from None
        if not key or "\n" in key:
            raise InputError(f"--api-key-file {key_file}: must hold the key on one line")
        return key
    key = api_key or os.environ.get(KEY_ENV)
    if not key:
        raise InputError(f"set {KEY_ENV} or give --api-key-file FILE; every request must carry the key")
    return key


@guarded
def serve(
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", help=f"Key for X-API-Key; visible in `ps`: prefer ${KEY_ENV} or --api-key-file."
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="File holding the key on one line.")
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
    prefetch: Annotated[
        int | None,
        typer.Option(
            "--prefetch",
            help="Slices encoded each side of a session's last slice while it is idle "
            "(default 2, within --cache-slices; 0: off).",
        ),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest upload body.")] = 256.0,
    max_voxels: Annotated[
        int, typer.Option("--max-voxels", help="Largest volume, read from its header first (512x512x1000).")
    ] = 512 * 512 * 1000,
    session_memory_mb: Annotated[
        float,
        typer.Option("--session-memory-mb", help="Memory one session may hold (image, model input, mask)."),
    ] = 4096.0,
    max_folder_files: Annotated[
        int, typer.Option("--max-folder-files", help="Files and folders a DICOM folder may hold.")
    ] = 4096,
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout",
            help="Seconds a client may take to send a request line and headers (from connecting "
            "or from the previous response); then the connection is closed.",
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            help="Seconds a request body may take to arrive after its headers (an upload of "
            "--max-upload-mb must come at least that fast); then the connection is closed.",
        ),
    ] = 120.0,
    keep_alive_timeout: Annotated[
        float,
        typer.Option("--keep-alive-timeout", help="Seconds an idle connection is kept between requests."),
    ] = 5.0,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections", help="Connections open at once; one more is answered 503 and closed."
        ),
    ] = 256,
    allow_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--allow-root", help="Open by path only under this folder (repeatable; default: anywhere)."
        ),
    ] = None,
    model: Model = "litemedsam",
    backend: Backend = None,
    precision: Precision = None,
    device: Device = "cpu",
) -> None:
    """Serve sessions over HTTP: open a volume, click/box -> mask, undo, RTSTRUCT (OpenAPI at /docs)."""
    key = read_api_key(api_key, api_key_file)
    if not 1 <= port <= 65535 or max_sessions < 1 or cache_slices < 0 or max_upload_mb <= 0:
        raise InputError(
            "port must be 1-65535, --max-sessions >= 1, --cache-slices >= 0, --max-upload-mb > 0"
        )
    if max_voxels < 1 or session_memory_mb <= 0 or max_folder_files < 1:
        raise InputError("--max-voxels, --session-memory-mb and --max-folder-files must be positive")
    if min(header_timeout, body_timeout, keep_alive_timeout) <= 0 or max_connections < 1:
        raise InputError(
            "--header-timeout, --body-timeout, --keep-alive-timeout and --max-connections must be positive"
        )
    roots = []
    for root in allow_root or []:
        if not root.is_dir():
            raise InputError(f"--allow-root {root}: not a folder")
        roots.append(root.resolve())
    import uvicorn

    from samfast.io.image_budget import set_max_voxels
    from samfast.serve.app import create_app
    from samfast.serve.connections import ConnectionLimits, protocol_class
    from samfast.serve.limits import Limits

    if len(key) < 16:
        typer.echo("warning: an API key shorter than 16 characters is easy to guess", err=True)
    if host not in LOOPBACK:
        typer.echo(f"warning: listening on {host}, reachable from other machines; plain HTTP", err=True)
    limits = Limits(
        max_voxels=max_voxels,
        session_bytes=int(session_memory_mb * 2**20),
        max_folder_entries=max_folder_files,
        allow_roots=tuple(roots),
    )
    predictor = open_predictor(model, backend, device, precision, lambda m: typer.echo(m, err=True))
    set_max_voxels(max_voxels)  # pictures (PNG, JPEG, TIFF) are decoded under the same budget
    if prefetch is not None and prefetch < 0:
        raise InputError(f"--prefetch {prefetch}: give 0 (off) or a number of slices")
    app = create_app(
        predictor,
        key,
        max_sessions,
        cache_slices,
        int(max_upload_mb * 2**20),
        limits,
        prefetch_slices=prefetch,
    )
    connections = ConnectionLimits(header_timeout, body_timeout, keep_alive_timeout, max_connections)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=10,
        http=protocol_class(connections),  # h11 with read deadlines, whether or not httptools is installed
        timeout_keep_alive=keep_alive_timeout,  # type: ignore[arg-type]  # uvicorn takes any number
    )
