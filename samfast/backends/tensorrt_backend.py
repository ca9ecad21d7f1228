"""TensorRT backend: the engines built by samfast.export.tensorrt_build, run on one CUDA stream.

Engines are bound to a GPU architecture and TensorRT version; a set built elsewhere is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samfast.artifacts.gpu import gpu_identity, tensorrt_available
from samfast.artifacts.manifest import read_manifest
from samfast.backends.base import BackendInfo, HoldsItsGraphs, Prompts, info_fields
from samfast.errors import InputError, SamfastError

_POINTS = "points in a prompt set (a box counts as 2 points, no box adds a padding point)"
_LIMITS = {
    ("images", 0): "slices in one call",
    ("point_coords", 0): "prompt sets",
    ("point_labels", 0): "prompt sets",
    ("mask_input", 0): "prompt sets",
    ("point_coords", 1): _POINTS,
    ("point_labels", 1): _POINTS,
}


def _rebuild_hint(model: str) -> str:
    return f"rebuild with `samfast export --model {model} --format engine`"


class _Engine:
    """One deserialized engine, its execution context and pinned host buffers reused between calls."""

    def __init__(self, trt, runtime, path: Path, device, model: str) -> None:
        import torch

        self.path = path
        try:
            data = path.read_bytes()
        except OSError as error:
            raise InputError(
                f"{path}: cannot read the engine ({error.strerror}); {_rebuild_hint(model)}"
            ) from None
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise InputError(f"{path} does not deserialize on this machine; {_rebuild_hint(model)}")
        self.context = self.engine.create_execution_context()
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
        for name in ("int64", "int8", "uint8", "bool"):
            if hasattr(trt, name):
                dtypes[getattr(trt, name)] = getattr(torch, name)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: dtypes[self.engine.get_tensor_dtype(n)] for n in names}
        self.np_dtypes = {n: torch.empty(0, dtype=t).numpy().dtype for n, t in self.dtypes.items()}
        self.device = device
        self._host: dict[str, torch.Tensor] = {}

    def _pinned(self, name: str, shape: tuple[int, ...]):
        """A pinned host tensor of ``shape`` for ``name``, grown (never shrunk) as calls need."""
        import torch

        count = int(np.prod(shape))
        buffer = self._host.get(name)
        if buffer is None or buffer.numel() < count:
            buffer = torch.empty(max(count, 1), dtype=self.dtypes[name], pin_memory=True)
            self._host[name] = buffer
        return buffer[:count].view(shape)

    def run(self, feeds: dict[str, np.ndarray], stream) -> dict[str, np.ndarray]:
        import torch

        keep = []  # device tensors must outlive the enqueued work
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            for name in self.inputs:
                dtype = self.dtypes[name]
                array = np.ascontiguousarray(feeds[name], dtype=self.np_dtypes[name])
                host = self._pinned(name, array.shape)
                host.copy_(torch.from_numpy(array))
                device = torch.empty(array.shape, dtype=dtype, device=self.device)
                device.copy_(host, non_blocking=True)
                if not self.context.set_input_shape(name, tuple(array.shape)):
                    raise InputError(f"{name} of shape {array.shape} is outside the engine's profile")
                self.context.set_tensor_address(name, device.data_ptr())
                keep.append(device)
            results = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise SamfastError(f"TensorRT left the shape of {name} unresolved: {shape}")
                device = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_tensor_address(name, device.data_ptr())
                keep.append(device)
                results[name] = device
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise SamfastError(f"TensorRT failed to run {self.path.name}")
            hosts = {}
            for name, device in results.items():
                hosts[name] = self._pinned(name, tuple(device.shape))
                hosts[name].copy_(device, non_blocking=True)
            stream.synchronize()
        return {name: host.numpy().astype(np.float32, copy=True) for name, host in hosts.items()}


class TensorRTBackend(HoldsItsGraphs):
    name = "tensorrt"

    def __init__(
        self, folder: Path, low_res_size: int, device: str = "cuda", precision: str = "fp16"
    ) -> None:
        available, reason = tensorrt_available()
        if not available:
            raise InputError(f"the tensorrt backend cannot run here: {reason}")
        import tensorrt as trt
        import torch

        self.folder = Path(folder)
        self.low_res_size = low_res_size
        self.precision = precision
        if not device.startswith("cuda"):
            raise InputError(f"the tensorrt backend runs on a CUDA GPU, not {device!r}; use device cuda")
        index = torch.device(device).index
        self.device = torch.device("cuda", torch.cuda.current_device() if index is None else index)
        manifest = read_manifest(self.folder)
        if manifest is None or "encoder" not in manifest or "compute_capability" not in manifest:
            raise InputError(f"{self.folder} holds no TensorRT engine manifest; {_rebuild_hint('MODEL')}")
        self.manifest = manifest
        model = manifest.get("model", "MODEL")
        here = gpu_identity(self.device.index)
        built = {key: manifest.get(key) for key in here}
        if (built["compute_capability"], built["tensorrt"]) != (here["compute_capability"], here["tensorrt"]):
            raise InputError(
                f"engines in {self.folder} were built for {built['gpu_name']}"
                f" (sm_{built['compute_capability']}) with TensorRT {built['tensorrt']}; this machine has"
                f" {here['gpu_name']} (sm_{here['compute_capability']}) with TensorRT {here['tensorrt']}:"
                f" {_rebuild_hint(model)}"
            )
        if manifest.get("precision") != precision:
            raise InputError(
                f"engines in {self.folder} are {manifest.get('precision')}, not {precision}: "
                f"{_rebuild_hint(model)} --precision {precision}"
            )
        self.identity = here
        self.info = BackendInfo(self.name, str(self.device), precision)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self._stream = torch.cuda.Stream(device=self.device)
            self.encoder = _Engine(
                trt, self._runtime, self.folder / manifest["encoder"]["file"], self.device, model
            )
            self.decoder = _Engine(
                trt, self._runtime, self.folder / manifest["decoder"]["file"], self.device, model
            )
        self._profiles = {
            "encoder": manifest["encoder"]["profile"],
            "decoder": manifest["decoder"]["profile"],
        }

    def _check(self, graph: str, name: str, shape: tuple[int, ...]) -> None:
        """One-line refusal of a shape outside the optimization profile the engine was built with."""
        low, _, high = self._profiles[graph][name]
        if len(shape) != len(high) or any(
            lo == hi != size for size, lo, hi in zip(shape, low, high, strict=False)
        ):
            raise InputError(f"{name} must have shape like {tuple(high)}, got {shape}")
        for axis, (size, lo, hi) in enumerate(zip(shape, low, high, strict=True)):
            if size < lo:
                raise InputError(f"{name} of shape {shape} is empty")
            if size > hi:
                what = _LIMITS.get((name, axis), f"entries on axis {axis} of {name}")
                raise InputError(
                    f"{size} {what} exceed the engine limit of {hi}: split the call or rebuild the engines "
                    "with a larger limit"
                )

    def encode(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        self._check("encoder", "images", tuple(images.shape))
        return self.encoder.run({"images": images}, self._stream)["image_embeddings"]

    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        if prompts.batch < 1:
            raise InputError("give at least one prompt set")
        feeds = prompts.to_sam_onnx(self.low_res_size)
        feeds["image_embeddings"] = np.asarray(embedding)
        for name, value in feeds.items():
            self._check("decoder", name, tuple(value.shape))
        out = self.decoder.run(feeds, self._stream)
        return out["low_res_masks"], out["iou_predictions"]

    def describe(self) -> dict:
        return info_fields(self.info) | {
            "tensorrt": self.identity["tensorrt"],
            "gpu": self.identity["gpu_name"],
            "compute_capability": self.identity["compute_capability"],
            "typing": self.manifest.get("typing"),
            "fp32_pinned_layers": self.manifest.get("fp32_pinned_layers"),
            "artifacts": str(self.folder),
        }
