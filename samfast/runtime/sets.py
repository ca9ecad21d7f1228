"""A backend for the Predictor, exporting its ONNX/TorchScript set first when there is none.

Backends only open sets; building one is the runtime's decision. It runs in a child process
(samfast.export.child), so the ONNX Runtime / OpenVINO path never imports torch, even the first time.
"""

from __future__ import annotations

import logging
from typing import Any

from samfast.artifacts.layout import MissingSet
from samfast.backends import Backend, create_backend, set_precision
from samfast.models import WeightsInfo


def backend_building_missing_set(name: str, model_name: str, weights: WeightsInfo, **options: Any) -> Backend:
    """create_backend(name, model_name, weights, **options), but a missing or stale ONNX/TorchScript
    set is exported once (in a child process: it needs torch) and cached; a missing TensorRT engine
    stays an error naming the `samfast export` command. ``options`` are create_backend's own, passed
    through unchanged; their ``log`` gets the export's progress."""
    try:
        return create_backend(name, model_name, weights, **options)
    except MissingSet as missing:
        if not missing.buildable:
            raise
        from samfast.export.cache import SetRequest
        from samfast.export.child import export_in_child

        precision = set_precision(name, options.get("precision", "fp32"))
        request = SetRequest(model_name, weights, missing.fmt, precision, options.get("engine_dir"))
        export_in_child(
            request, log=options.get("log") or logging.getLogger("samfast").info, reason=missing.reason
        )
    return create_backend(name, model_name, weights, **options)
