"""Exporting a missing ONNX/TorchScript set in a child Python process that exits when it is written.

The caller never imports torch (the ONNX Runtime / OpenVINO path stays as small as a warm run);
the child's log lines come back through the caller's log, its failure as one line (ExportFailed).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from samfast.artifacts.graphs import DEFAULT_OPSET
from samfast.artifacts.layout import default_engine_dir
from samfast.errors import CheckpointError, SamfastError
from samfast.export.cache import SetRequest, build_locked
from samfast.models import WeightsInfo, get_spec

# With nothing from the child for this long, the caller is told it is still exporting.
PROGRESS_EVERY_S = 10.0
# A rough export time on 2 cores: starting torch and the exporter, plus a share per MB of weights
# (LiteMedSAM, 40 MB: ~25 s in all, bench/first_run.py).
STARTUP_S, SECONDS_PER_MB = 5.0, 0.5
# The child's exit status for a SamfastError (one line on stderr, prefixed "error: ").
FAILED = 2


class ExportFailed(SamfastError):
    """The child process exporting a set failed; the message is its one-line reason."""


def _default_log(message: str) -> None:
    logging.getLogger("samfast").info(message)


def expected_seconds(model_name: str) -> int:
    size_mb = (get_spec(model_name).checkpoint_size or 0) / 1e6
    return int(round((STARTUP_S + SECONDS_PER_MB * size_mb) / 5) * 5) or 5


def export_in_child(
    request: SetRequest, log: Callable[[str], None] = _default_log, reason: str | None = None
) -> Path:
    """Build the set in ``python -m samfast.export.child`` and return its folder; the child's log
    lines are relayed to ``log``, with a line every PROGRESS_EVERY_S while it says nothing."""
    spec, weights, fmt, opset = get_spec(request.model_name), request.weights, request.fmt, request.opset
    engine_dir = Path(request.engine_dir or default_engine_dir())
    folder = replace(request, engine_dir=engine_dir).folder
    why = f"{reason}; " if reason else ""
    log(
        f"exporting the {fmt} set for {spec.name} [{weights.label}] in a separate process "
        f"({why}first run only, ~{expected_seconds(spec.name)} s); cached in {folder}"
    )
    command = [
        sys.executable,
        "-m",
        "samfast.export.child",
        spec.name,
        fmt,
        request.precision,
        str(engine_dir),
    ]
    command += ["--opset", str(opset)] + _weights_arguments(weights)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as stderr:
        code = _run_relaying(command, stderr, log, started)
        stderr.seek(0)
        errors = stderr.read()
    if code != 0:
        raise ExportFailed(_failure_line(spec.name, fmt, code, errors))
    log(f"exported the {fmt} set for {spec.name} in {time.perf_counter() - started:.0f} s")
    return folder


def _weights_arguments(weights: WeightsInfo) -> list[str]:
    if weights.random:
        return ["--seed", str(weights.seed)]
    return ["--checkpoint", str(weights.path), "--sha256", str(weights.sha256)]


def _run_relaying(command: list[str], stderr, log: Callable[[str], None], started: float) -> int:
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very samfast
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = os.environ | {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            try:
                line = lines.get(timeout=PROGRESS_EVERY_S)
            except queue.Empty:
                log(f"still exporting ({time.perf_counter() - started:.0f} s)")
                continue
            if line is None:
                return process.wait()
            if line:
                log(line)
    finally:
        if process.poll() is None:  # the caller was interrupted: the child's unfinished files go too
            process.terminate()
            process.wait()
        process.stdout.close()


def _failure_line(model_name: str, fmt: str, code: int, errors: str) -> str:
    lines = [line.strip() for line in errors.splitlines() if line.strip()]
    head = f"exporting the {fmt} set for {model_name} failed"
    if code == FAILED and lines and lines[-1].startswith("error: "):
        return f"{head}: {lines[-1].removeprefix('error: ')}"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"{head}: the export process was killed by {name} (out of memory?); nothing written"
    saved = Path(tempfile.mkstemp(prefix="samfast-export-", suffix=".log")[1])
    saved.write_text(errors, encoding="utf-8")
    last = lines[-1] if lines else f"exit status {code}"
    return f"{head}: {last[:300]} (the export's full output: {saved}); nothing written"


# -- the child --------------------------------------------------------------------------------


def _weights(args: argparse.Namespace) -> WeightsInfo:
    """The caller's weights, the checkpoint checked again: the set must be made from those bytes."""
    from samfast.models.checkpoints import sha256_file

    if args.checkpoint is None:
        return WeightsInfo(random=True, seed=args.seed)
    try:
        digest = sha256_file(args.checkpoint)
    except OSError as error:
        raise CheckpointError(f"checkpoint {args.checkpoint}: {error.strerror or error}") from None
    if digest != args.sha256:
        raise CheckpointError(
            f"checkpoint {args.checkpoint}: sha256 {digest[:16]}… is not the {args.sha256[:16]}… "
            "the caller verified (was the file replaced?)"
        )
    return WeightsInfo(random=False, sha256=digest, path=args.checkpoint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samfast.export.child", description=__doc__)
    parser.add_argument("model")
    parser.add_argument("fmt", choices=("onnx", "torchscript"))
    parser.add_argument("precision")
    parser.add_argument("engine_dir", type=Path)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--checkpoint")
    parser.add_argument("--sha256")
    args = parser.parse_args(argv)
    # The caller's terminate() must still remove the half-written temporary folder (build_set
    # cleans up on any exception, SystemExit included).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    try:
        request = SetRequest(
            args.model, _weights(args), args.fmt, args.precision, args.engine_dir, args.opset
        )
        build_locked(request, log=lambda message: print(message, flush=True))
    except SamfastError as error:
        print(f"error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
        return FAILED
    except OSError as error:  # the file system (full, read-only): one line, as the CLI says it
        if error.errno is None:
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{os.strerror(error.errno)}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
