"""Backends behind one contract (samfast.backends.base.Backend: info, encode, decode, decode_rows,
release, describe), created by name.

Each backend module is imported only when asked for, so TensorRT or onnxruntime stay optional.
Creating a backend never exports: a missing set raises samfast.artifacts.layout.MissingSet, and
the caller builds it (samfast.runtime.sets) and says so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from samfast.artifacts.layout import BACKEND_FORMATS, find_set
from samfast.backends.base import Backend, BackendInfo, Prompts
from samfast.errors import InputError
from samfast.models import WeightsInfo, get_spec

__all__ = ["BACKENDS", "Backend", "BackendInfo", "Prompts", "backend_status", "create_backend"]

BACKENDS = ("torch", *BACKEND_FORMATS)


def create_backend(
    name: str,
    model_name: str,
    weights: WeightsInfo,
    device: str = "cpu",
    precision: str = "fp32",
    engine_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> Backend:
    """``threads`` sets ONNX Runtime's intra-op pool; torch's pool is process-wide
    (torch.set_num_threads), so it is left to the caller. Raises MissingSet when the set this
    backend runs is not in ``engine_dir`` (or is stale). ``log`` is for whoever builds that set
    (samfast.runtime.sets); opening a set says nothing."""
    spec = get_spec(model_name)
    if name == "torch":
        from samfast.backends.torch_backend import TorchBackend
        from samfast.models import build_model

        return TorchBackend(build_model(spec.name, weights=weights), device, precision)
    if name not in BACKEND_FORMATS:
        raise InputError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    folder = find_set(spec, weights, BACKEND_FORMATS[name], set_precision(name, precision), engine_dir)
    if name == "openvino":
        from samfast.backends.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(folder, spec.low_res_size, device, precision, threads=threads)
    return open_set(BACKEND_FORMATS[name], folder, spec, device, precision, threads)


def set_precision(backend: str, precision: str) -> str:
    """The precision of the set a backend runs: ONNX/TorchScript sets are fp32 graphs (OpenVINO's
    bf16 is a compile hint); engines are built per precision."""
    return precision if backend == "tensorrt" else "fp32"


def open_set(
    fmt: str, folder: Path, spec, device: str = "cpu", precision: str = "fp32", threads: int | None = None
) -> Backend:
    """The runtime backend over one exported set."""
    if fmt == "onnx":
        from samfast.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(folder, spec.low_res_size, device, precision, threads=threads)
    if fmt == "torchscript":
        from samfast.backends.torchscript_backend import TorchScriptBackend

        return TorchScriptBackend(folder, spec.low_res_size, device, precision)
    from samfast.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(folder, spec.low_res_size, "cuda" if device == "cpu" else device, precision)


def backend_status() -> dict[str, dict]:
    """What this machine can run, for `samfast info` (no heavy imports beyond version lookups)."""
    import torch

    from samfast.artifacts.manifest import dist_version as version

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
    status["openvino"] = {
        "usable": importlib.util.find_spec("openvino") is not None,
        "version": version("openvino"),
        "note": None if importlib.util.find_spec("openvino") else "pip install .[openvino]",
    }
    status["torchscript"] = {"usable": True, "version": torch.__version__}
    from samfast.artifacts.gpu import tensorrt_available

    usable, reason = tensorrt_available()
    status["tensorrt"] = {"usable": usable, "version": version("tensorrt"), "note": reason or None}
    return status
