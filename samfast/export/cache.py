"""Building a missing ONNX/TorchScript set into the engines/ cache on first use.

Backends only find sets (samfast.artifacts.layout.find_set); the runtime calls ensure_set when one
is missing, and this says so in the log. TensorRT engines are built only by `samfast export`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from samfast.artifacts.graphs import DEFAULT_OPSET
from samfast.artifacts.layout import MissingSet, find_set, set_dir, set_opset
from samfast.export.set_writer import build_set
from samfast.models import WeightsInfo, get_spec


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
    """Return a folder holding a valid set, building ONNX/TorchScript sets first if needed."""
    spec = get_spec(model_name)
    try:
        return find_set(spec, weights, fmt, precision, engine_dir, opset)
    except MissingSet as missing:
        if not missing.buildable:
            raise
        folder, reason = missing.folder, missing.reason
    log(f"building {fmt} for {spec.name} [{weights.label}] ({reason}); once only, cached in {folder}")
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


def ensure_onnx(
    model_name: str,
    weights: WeightsInfo,
    engine_dir: Path | None = None,
    opset: int = DEFAULT_OPSET,
    log: Callable[[str], None] = print,
) -> Path:
    return ensure_set(model_name, weights, "onnx", "fp32", engine_dir, opset, log)
