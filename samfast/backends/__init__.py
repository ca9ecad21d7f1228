"""Backends behind one protocol (encode / decode / describe), created by name.

Each backend module is imported only when asked for, so TensorRT or onnxruntime stay optional.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from samfast.backends.base import Backend, Prompts
from samfast.errors import InputError
from samfast.models import WeightsInfo, build_model, get_spec

__all__ = ["BACKENDS", "Backend", "Prompts", "backend_status", "create_backend"]

BACKENDS = ("torch", "onnxruntime")


def create_backend(
    name: str,
    model_name: str,
    weights: WeightsInfo,
    device: str = "cpu",
    precision: str = "fp32",
    engine_dir: Path | None = None,
    log: Callable[[str], None] = print,
    threads: int | None = None,
) -> Backend:
    """``threads`` sets ONNX Runtime's intra-op pool; torch's pool is process-wide
    (torch.set_num_threads), so it is left to the caller."""
    spec = get_spec(model_name)
    if name == "torch":
        from samfast.backends.torch_backend import TorchBackend

        return TorchBackend(build_model(spec.name, weights=weights), device, precision)
    if name == "onnxruntime":
        from samfast.backends.onnxruntime_backend import OnnxRuntimeBackend
        from samfast.export.cache import ensure_onnx

        folder = ensure_onnx(spec.name, weights, engine_dir, log=log)
        return OnnxRuntimeBackend(folder, spec.low_res_size, device, precision, threads=threads)
    raise InputError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


def backend_status() -> dict[str, dict]:
    """What this machine can run, for `samfast info` (no heavy imports beyond version lookups)."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    import torch

    cuda = torch.cuda.is_available()
    status = {
        "torch": {
            "usable": True,
            "version": torch.__version__,
            "cuda": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
        },
    }
    providers: list[str] = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    status["onnxruntime"] = {
        "usable": bool(providers),
        "version": version("onnxruntime") or version("onnxruntime-gpu"),
        "providers": providers,
    }
    status["tensorrt"] = {
        "usable": version("tensorrt") is not None and cuda,
        "version": version("tensorrt"),
        "note": None if cuda else "needs a CUDA GPU",
    }
    return status
