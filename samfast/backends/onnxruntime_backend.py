"""ONNX Runtime backend over the project's own exported encoder/decoder graphs.

CPU provider by default; CUDA or TensorRT execution providers when onnxruntime-gpu offers them.
The common work (prompt convention, split decoder, image states, rows, release) is ExportedSetBackend's;
this module opens the graphs as ONNX Runtime sessions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samfast.backends.base import info_fields
from samfast.backends.cpu import cores
from samfast.backends.exported_set import SIDE_BY_SIDE, ExportedSetBackend
from samfast.errors import InputError

_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def session_options(threads: int | None = None):
    """CPU session settings, spelled out: all graph optimisations, one intra-op pool as wide as
    the cores (``threads`` overrides), no inter-op pool (the graphs are one chain), the memory
    arena and memory-pattern planning on, so repeated calls of one shape reuse their buffers."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = cores(threads)
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    # Idle pool threads would otherwise spin after each run, taking the cores from the numpy and
    # torch work between calls (prompt rules, mask upsampling) and from other sessions.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntimeBackend(ExportedSetBackend):
    name = "onnxruntime"
    # Its two-thread encoder session keeps both cores busy already: two one-thread calls side by
    # side were slower (0.96x, bench/side_by_side.py) and would hold a second encoder session.
    encoder_side_by_side = False

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
        super().__init__(folder, low_res_size, device, precision, threads)
        self._options = session_options(threads)
        self.providers = wanted
        self._ort_version = ort.__version__

    def _session(self, name: str, side_by_side: bool = False):
        """Each graph's session opens on first use: a decoder-only user never holds the encoder.
        For side-by-side calls a second session of the graph runs each call on its share of the
        cores (a session's run is thread-safe; with one intra-op thread it runs on the caller's).
        (find_set has checked every file against its sha256 before a backend gets the folder.)"""
        key = name + SIDE_BY_SIDE if side_by_side else name
        if key not in self._graphs:
            import onnxruntime as ort

            options = session_options(self._threads_per_call()) if side_by_side else self._options
            path = self.folder / f"{name}.onnx"
            self._graphs[key] = ort.InferenceSession(str(path), options, providers=self.providers)
        return self._graphs[key]

    def _run(self, graph: str, feeds: dict[str, np.ndarray], outputs) -> list[np.ndarray]:
        return self._session(graph).run(list(outputs), feeds)

    def _run_side_by_side(self, graph: str, feeds_list, outputs) -> list[list[np.ndarray]]:
        session = self._session(graph, side_by_side=True)
        return list(
            self._side_by_side_callers().map(lambda feeds: session.run(list(outputs), feeds), feeds_list)
        )

    @property
    def encoder(self):
        return self._session("encoder")

    @property
    def decoder(self):
        return self._session("decoder")

    def describe(self) -> dict:
        return info_fields(self.info) | {
            "providers": self.providers,
            "intra_op_threads": self._options.intra_op_num_threads,
            "side_by_side": self.info.side_by_side,
            "split_decoder": self.info.split_decoder,
            "onnxruntime": self._ort_version,
            "artifacts": str(self.folder),
        }
