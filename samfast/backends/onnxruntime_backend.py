"""ONNX Runtime backend over the project's own exported encoder/decoder graphs.

CPU provider by default; CUDA or TensorRT execution providers when onnxruntime-gpu offers them.
Besides the SamOnnxModel-style decoder, sets hold the decoder split at the prompt (image side once
per embedding, prompt side per click): ``image_state`` + ``decode_state``.
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
    # Idle pool threads would otherwise spin after each run, taking the cores from the numpy and
    # torch work between calls (prompt rules, mask upsampling) and from other sessions.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        self._options = session_options(threads)
        self.folder = Path(folder)
        self.low_res_size = low_res_size
        self.device = device
        self.precision = precision
        self.providers = wanted
        self._ort_version = ort.__version__
        self._sessions: dict[str, object] = {}
        # Whether this set has the split decoder graphs (sets exported before it do not); looked
        # up once, not on every click.
        self.splits_decoder = all(
            (self.folder / f"{name}.onnx").is_file() for name in ("decoder_image", "decoder_prompt")
        )

    def _session(self, name: str):
        """Each graph's session opens on first use: a decoder-only user never holds the encoder.
        (find_set has checked every file against its sha256 before a backend gets the folder.)"""
        if name not in self._sessions:
            import onnxruntime as ort

            path = self.folder / f"{name}.onnx"
            self._sessions[name] = ort.InferenceSession(str(path), self._options, providers=self.providers)
        return self._sessions[name]

    def release(self, *names: str) -> None:
        """Close the named graphs' sessions (all when none is named), handing their weights and
        arenas back; a later call reopens them. E.g. the encoder, once a volume has streamed."""
        for name in names or list(self._sessions):
            self._sessions.pop(name, None)

    @property
    def encoder(self):
        return self._session("encoder")

    @property
    def decoder(self):
        return self._session("decoder")

    def encode(self, images: np.ndarray) -> np.ndarray:
        (embeddings,) = self.encoder.run(None, {"images": np.ascontiguousarray(images, np.float32)})
        return embeddings

    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        feeds = prompts.to_sam_onnx(self.low_res_size)
        feeds["image_embeddings"] = np.ascontiguousarray(embedding, np.float32)
        iou, masks = self.decoder.run(["iou_predictions", "low_res_masks"], feeds)
        return masks, iou

    # -- the decoder split at the prompt (samfast.export.split_decoder) -------------------------

    def image_state(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """(B, C, h, w) embeddings -> the decoder's prompt-independent state, B rows."""
        from samfast.artifacts.graphs import STATE_NAMES

        outputs = self._session("decoder_image").run(
            None, {"image_embeddings": np.ascontiguousarray(embeddings, np.float32)}
        )
        return dict(zip(STATE_NAMES, outputs, strict=True))

    def decode_state(self, state: dict[str, np.ndarray], prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """``decode`` from an image_state (1 row shared by all prompt sets, or one row per set);
        prompts without a mask input only (a mask changes the image side: use ``decode``)."""
        if prompts.mask_input is not None:
            raise ValueError("decode_state takes no mask_input; decode() handles mask prompts")
        feeds = prompts.to_sam_onnx(self.low_res_size)
        feeds = {"point_coords": feeds["point_coords"], "point_labels": feeds["point_labels"], **state}
        iou, masks = self._session("decoder_prompt").run(["iou_predictions", "low_res_masks"], feeds)
        return masks, iou

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": self.device,
            "precision": self.precision,
            "providers": self.providers,
            "intra_op_threads": self._options.intra_op_num_threads,
            "split_decoder": self.splits_decoder,
            "onnxruntime": self._ort_version,
            "artifacts": str(self.folder),
        }
