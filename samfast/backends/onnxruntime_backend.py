"""ONNX Runtime backend over the project's own exported encoder/decoder graphs.

CPU provider by default; CUDA or TensorRT execution providers when onnxruntime-gpu offers them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from samfast.backends.base import Prompts
from samfast.errors import InputError

_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(threads: int | None = None):
    """CPU session settings, spelled out: all graph optimisations, one intra-op pool as wide as
    the cores (``threads`` overrides), no inter-op pool (the graphs are one chain), the memory
    arena and memory-pattern planning on, so repeated calls of one shape reuse their buffers."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads) if threads else available_cores()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    return options


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        folder: Path,
        low_res_size: int,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort  # heavy; only when this backend is chosen

        if precision != "fp32":
            raise InputError("the onnxruntime backend runs the fp32 export; fp16 comes from engines")
        kind = device.split(":")[0]
        if kind not in _DEVICE_PROVIDERS:
            raise InputError(f"device {device!r} unknown for onnxruntime; use cpu, cuda or tensorrt")
        wanted = _DEVICE_PROVIDERS[kind]
        if wanted[0] not in ort.get_available_providers():
            raise InputError(f"{wanted[0]} is not available (install the gpu extra: onnxruntime-gpu)")
        options = session_options(threads)
        self.folder = Path(folder)
        self.low_res_size = low_res_size
        self.device = device
        self.precision = precision
        self.providers = wanted
        self._ort_version = ort.__version__
        self.encoder = ort.InferenceSession(str(self.folder / "encoder.onnx"), options, providers=wanted)
        self.decoder = ort.InferenceSession(str(self.folder / "decoder.onnx"), options, providers=wanted)

    def encode(self, images: np.ndarray) -> np.ndarray:
        (embeddings,) = self.encoder.run(None, {"images": np.ascontiguousarray(images, np.float32)})
        return embeddings

    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        feeds = prompts.to_sam_onnx(self.low_res_size)
        feeds["image_embeddings"] = np.ascontiguousarray(embedding, np.float32)
        iou, masks = self.decoder.run(["iou_predictions", "low_res_masks"], feeds)
        return masks, iou

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": self.device,
            "precision": self.precision,
            "providers": self.providers,
            "intra_op_threads": self.encoder.get_session_options().intra_op_num_threads,
            "onnxruntime": self._ort_version,
            "artifacts": str(self.folder),
        }
