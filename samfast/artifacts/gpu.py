"""The GPU and TensorRT an engine is bound to, and whether this machine has them.

TensorRT and torch are imported inside the functions, so this module imports with bare dependencies.
"""

from __future__ import annotations

import importlib.util


def tensorrt_available() -> tuple[bool, str]:
    """(True, "") when TensorRT imports and torch sees a CUDA GPU, else (False, one-line reason)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT is not installed (pip install .[gpu])"
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return False, f"TensorRT is installed but does not import: {first}"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to torch"
    return True, ""


def gpu_identity(device: int | None = None) -> dict:
    """The GPU and TensorRT version an engine is bound to (an engine runs only where it was built)."""
    import tensorrt as trt
    import torch

    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return {
        "gpu_name": torch.cuda.get_device_name(index),
        "compute_capability": f"{major}.{minor}",
        "tensorrt": trt.__version__,
    }
