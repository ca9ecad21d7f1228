"""The engines/ cache: exported sets keyed by model and weights, rebuilt when stale.

Layout: ``<engine_dir>/<model>/<weights tag>/onnx-fp32/{encoder.onnx, decoder.onnx, manifest.json}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from samfast.export.artifacts import expected_manifest_fields
from samfast.export.manifest import mismatch_reason
from samfast.export.onnx_export import DEFAULT_OPSET, export_onnx
from samfast.models import WeightsInfo, build_model, get_spec


def default_engine_dir() -> Path:
    """$SAMFAST_ENGINES, else the source checkout's engines/, else ~/.cache/samfast/engines."""
    if os.environ.get("SAMFAST_ENGINES"):
        return Path(os.environ["SAMFAST_ENGINES"]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "engines").is_dir():
        return checkout / "engines"
    return Path.home() / ".cache" / "samfast" / "engines"


def onnx_dir(model_name: str, weights: WeightsInfo, engine_dir: Path | None = None) -> Path:
    spec = get_spec(model_name)
    return Path(engine_dir or default_engine_dir()) / spec.name / weights.tag / "onnx-fp32"


def ensure_onnx(
    model_name: str,
    weights: WeightsInfo,
    engine_dir: Path | None = None,
    opset: int = DEFAULT_OPSET,
    log: Callable[[str], None] = print,
) -> Path:
    """Return a folder holding a verified ONNX export, exporting first if needed."""
    spec = get_spec(model_name)
    folder = onnx_dir(spec.name, weights, engine_dir)
    reason = mismatch_reason(folder, expected_manifest_fields(spec.name, weights, opset))
    if reason is None:
        return folder
    log(f"building ONNX for {spec.name} [{weights.label}] ({reason}); once only, cached in {folder}")
    export_onnx(build_model(spec.name, weights=weights), folder, opset=opset, log=log)
    return folder
