"""The engines/ cache: exported sets keyed by model, weights, format and precision.

Layout: ``<engine_dir>/<model>/<weights tag>/<format>-<precision>/`` (files + manifest.json).
ONNX and TorchScript sets are built on first use; TensorRT engines only by `samfast export`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from samfast.errors import InputError
from samfast.export.artifacts import build_set, expected_manifest_fields
from samfast.export.formats import set_name
from samfast.export.manifest import mismatch_reason
from samfast.export.onnx_export import DEFAULT_OPSET
from samfast.models import WeightsInfo, build_model, get_spec


def default_engine_dir() -> Path:
    """$SAMFAST_ENGINES, else the source checkout's engines/, else ~/.cache/samfast/engines."""
    if os.environ.get("SAMFAST_ENGINES"):
        return Path(os.environ["SAMFAST_ENGINES"]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "engines").is_dir():
        return checkout / "engines"
    return Path.home() / ".cache" / "samfast" / "engines"


def set_dir(
    model_name: str, weights: WeightsInfo, fmt: str, precision: str, engine_dir: Path | None = None
) -> Path:
    spec = get_spec(model_name)
    return Path(engine_dir or default_engine_dir()) / spec.name / weights.tag / set_name(fmt, precision)


def onnx_dir(model_name: str, weights: WeightsInfo, engine_dir: Path | None = None) -> Path:
    return set_dir(model_name, weights, "onnx", "fp32", engine_dir)


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
    folder = set_dir(spec.name, weights, fmt, precision, engine_dir)
    set_opset = None if fmt == "torchscript" else opset
    reason = mismatch_reason(folder, expected_manifest_fields(spec.name, weights, set_opset, precision, fmt))
    if reason is None:
        return folder
    if fmt == "engine":
        raise InputError(
            f"no usable TensorRT {precision} engines for {spec.name} in {folder} ({reason}): build them with "
            f"`samfast export --model {spec.name} --format engine --precision {precision}`"
        )
    log(f"building {fmt} for {spec.name} [{weights.label}] ({reason}); once only, cached in {folder}")
    model = build_model(spec.name, weights=weights)
    if fmt == "onnx":
        from samfast.export.onnx_export import write_onnx

        writer = lambda tmp: write_onnx(model, tmp, opset, log)  # noqa: E731
    else:
        from samfast.export.torchscript_export import write_torchscript

        writer = lambda tmp: write_torchscript(model, tmp, log)  # noqa: E731
    build_set(folder, spec, weights, fmt, precision, set_opset, writer, log=log)
    return folder


def ensure_onnx(
    model_name: str,
    weights: WeightsInfo,
    engine_dir: Path | None = None,
    opset: int = DEFAULT_OPSET,
    log: Callable[[str], None] = print,
) -> Path:
    return ensure_set(model_name, weights, "onnx", "fp32", engine_dir, opset, log)
