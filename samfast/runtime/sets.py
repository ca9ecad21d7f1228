"""A backend for the Predictor, exporting its ONNX/TorchScript set first when there is none.

Backends only open sets; building one is the runtime's decision, and ensure_set logs that it builds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from samfast.artifacts.layout import MissingSet
from samfast.backends import Backend, create_backend, set_precision
from samfast.models import WeightsInfo


def backend_building_missing_set(
    name: str,
    model_name: str,
    weights: WeightsInfo,
    device: str = "cpu",
    precision: str = "fp32",
    engine_dir: Path | None = None,
    log: Callable[[str], None] = print,
    threads: int | None = None,
) -> Backend:
    """create_backend, but a missing or stale ONNX/TorchScript set is exported once (it needs torch)
    and cached; a missing TensorRT engine stays an error naming the `samfast export` command."""
    try:
        return create_backend(name, model_name, weights, device, precision, engine_dir, log, threads)
    except MissingSet as missing:
        if not missing.buildable:
            raise
        from samfast.export.cache import ensure_set

        ensure_set(model_name, weights, missing.fmt, set_precision(name, precision), engine_dir, log=log)
    return create_backend(name, model_name, weights, device, precision, engine_dir, log, threads)
