"""Building a missing ONNX/TorchScript set into the engines/ cache on first use.

Backends only find sets (samfast.artifacts.layout.find_set); the runtime has a missing one built
(samfast.export.child runs build_locked in a child process). TensorRT engines only by `samfast export`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from samfast.artifacts.graphs import DEFAULT_OPSET
from samfast.artifacts.layout import MissingSet, find_set, set_dir, set_opset
from samfast.errors import InputError
from samfast.export.set_writer import build_set
from samfast.models import WeightsInfo, get_spec

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first runs there may both export
    fcntl = None


def onnx_dir(model_name: str, weights: WeightsInfo, engine_dir: Path | None = None) -> Path:
    return set_dir(get_spec(model_name), weights, "onnx", "fp32", engine_dir)


def ensure_set(
    model_name: str,
    weights: WeightsInfo,
    fmt: str,
    precision: str = "fp32",
    engine_dir: Path | None = None,
    opset: int = DEFAULT_OPSET,
    log: Callable[[str], None] = print,
) -> Path:
    """Return a folder holding a valid set, building ONNX/TorchScript sets first if needed (in
    this process: it imports torch)."""
    spec = get_spec(model_name)
    try:
        return find_set(spec, weights, fmt, precision, engine_dir, opset)
    except MissingSet as missing:
        if not missing.buildable:
            raise
        folder, reason = missing.folder, missing.reason
    log(f"building {fmt} for {spec.name} [{weights.label}] ({reason}); once only, cached in {folder}")
    return build_locked(SetRequest(model_name, weights, fmt, precision, engine_dir, opset), log)


@dataclass(frozen=True)
class SetRequest:
    """What an exported set is made from: the model, its weights, the format and precision, where
    the engines live (None: the default folder) and the ONNX opset."""

    model_name: str
    weights: WeightsInfo
    fmt: str
    precision: str = "fp32"
    engine_dir: Path | None = None
    opset: int = DEFAULT_OPSET

    @property
    def folder(self) -> Path:
        return set_dir(get_spec(self.model_name), self.weights, self.fmt, self.precision, self.engine_dir)


def build_locked(request: SetRequest, log: Callable[[str], None] = print) -> Path:
    """Export the set while holding its lock. A process that waited for another's export takes the
    set that one wrote instead of writing it again over a folder the other may be reading."""
    spec, folder = get_spec(request.model_name), request.folder
    weights, fmt, precision, opset = request.weights, request.fmt, request.precision, request.opset
    with set_lock(folder, log):
        try:
            return find_set(spec, weights, fmt, precision, request.engine_dir, opset)
        except MissingSet:
            pass
        from samfast.models import build_model

        model = build_model(spec.name, weights=weights)
        if fmt == "onnx":
            from samfast.export.onnx_export import write_onnx

            writer = lambda tmp: write_onnx(model, tmp, opset, log)  # noqa: E731
        else:
            from samfast.export.torchscript_export import write_torchscript

            writer = lambda tmp: write_torchscript(model, tmp, log)  # noqa: E731
        build_set(folder, spec, weights, fmt, precision, set_opset(fmt, opset), writer, log=log)
    return folder


@contextmanager
def set_lock(folder: Path, log: Callable[[str], None] = print) -> Iterator[None]:
    """An exclusive lock on ``folder``'s set across processes (a lock file beside it, released
    when its holder exits, however it exits)."""
    lock_path = folder.parent / f".{folder.name}.lock"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a")  # noqa: SIM115 (held open for the lock's lifetime)
    except OSError as error:
        raise InputError(f"{folder.parent}: cannot write there ({error.strerror or error})") from None
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"another samfast process is writing {folder}; waiting for it")
                fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_onnx(
    model_name: str,
    weights: WeightsInfo,
    engine_dir: Path | None = None,
    opset: int = DEFAULT_OPSET,
    log: Callable[[str], None] = print,
) -> Path:
    return ensure_set(model_name, weights, "onnx", "fp32", engine_dir, opset, log)
