"""A backend for the Predictor, exporting its ONNX/TorchScript set first when there is none.

Backends only open sets; building one is the runtime's decision, and ensure_set logs that it builds.
"""

from __future__ import annotations

from typing import Any

from samfast.artifacts.layout import MissingSet
from samfast.backends import Backend, create_backend, set_precision
from samfast.models import WeightsInfo


def backend_building_missing_set(name: str, model_name: str, weights: WeightsInfo, **options: Any) -> Backend:
    """create_backend(name, model_name, weights, **options), but a missing or stale ONNX/TorchScript
    set is exported once (it needs torch) and cached; a missing TensorRT engine stays an error naming
    the `samfast export` command. ``options`` are create_backend's own, passed through unchanged."""
    try:
        return create_backend(name, model_name, weights, **options)
    except MissingSet as missing:
        if not missing.buildable:
            raise
        from samfast.export.cache import ensure_set

        precision = set_precision(name, options.get("precision", "fp32"))
        engine_dir, log = options.get("engine_dir"), options.get("log", print)
        ensure_set(model_name, weights, missing.fmt, precision, engine_dir, log=log)
    return create_backend(name, model_name, weights, **options)
