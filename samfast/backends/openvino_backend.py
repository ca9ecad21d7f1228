"""OpenVINO CPU backend over the project's exported ONNX set, fp32 or bf16 (AMX / AVX-512 BF16).

OpenVINO reads the same encoder.onnx / decoder.onnx ONNX Runtime runs; bf16 is its inference
precision hint (weights and activations in bf16 on AMX tiles, accumulation in fp32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samfast.backends.base import info_fields
from samfast.backends.cpu import cores
from samfast.backends.exported_set import SIDE_BY_SIDE, ExportedSetBackend
from samfast.errors import InputError

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
# (Its parity rows, fp32 and bf16, are in samfast.eval.parity.TOLERANCES with the others.)


def cpu_supports(precision: str) -> bool:
    """Whether OpenVINO's CPU plugin runs ``precision`` natively here (bf16: AVX-512 BF16 or AMX)."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return precision == "fp32" or PRECISION_HINTS[precision].upper() in {c.upper() for c in capabilities}


class OpenVinoBackend(ExportedSetBackend):
    name = "openvino"

    def __init__(
        self,
        folder: Path,
        low_res_size: int,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        import openvino as ov  # heavy; only when this backend is chosen

        if device != "cpu":
            raise InputError(f"the openvino backend runs on the CPU, not {device!r}")
        if precision not in PRECISION_HINTS:
            raise InputError(f"openvino precision {precision!r} unknown; choose one of fp32, bf16")
        if not cpu_supports(precision):
            raise InputError(f"this CPU has no native {precision} (needs AVX-512 BF16 or AMX)")
        config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
            # One request at a time, all cores on it: the interactive / per-slice pattern.
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        # The precision hint applies to the split decoder's both sides too: a bf16 click runs bf16
        # end to end.
        super().__init__(folder, low_res_size, device, precision, threads)
        self._version = ov.get_version()
        self._core, self._config = ov.Core(), config

    def _graph(self, name: str, shape: tuple[int, ...] | None = None):
        """(compiled model, infer request) of one graph, compiled on first use: an encoder-only or
        decoder-only user holds one graph. Infer requests keep their buffers between calls.

        With ``shape`` (the encoder: one input) the graph is compiled for the first call's input
        shape as a static shape, for which OpenVINO picks its kernels (~3 % faster than the dynamic
        batch on 2 cores); a later call with another shape recompiles it once with the exported
        dynamic batch, which then stays (one compiled graph is held: the encoder is ~300 MiB)."""
        held = self._graphs.get(name)
        if held is not None and (shape is None or held[2] in (None, tuple(shape))):
            return held[:2]
        model = self._core.read_model(str(self.folder / f"{name}.onnx"))
        static = tuple(shape) if shape is not None and held is None else None
        if static is not None:
            model.reshape({model.input(0).get_any_name(): list(static)})
        compiled = self._core.compile_model(model, "CPU", self._config)
        self._graphs[name] = (compiled, compiled.create_infer_request(), static)
        return self._graphs[name][:2]

    def _run(self, graph: str, feeds: dict[str, np.ndarray], outputs) -> list[np.ndarray]:
        # the encoder (one input) is compiled for its input shape; see _graph
        shape = feeds["images"].shape if graph == "encoder" else None
        model, request = self._graph(graph, shape=shape)
        # share_inputs: the request reads the caller's arrays in place (it copied each one, ~0.3 ms
        # a decoder call's state, 3 % of a whole-volume run); they outlive the call.
        result = request.infer(feeds, share_inputs=True)
        return [np.array(result[model.output(name)], np.float32, copy=True) for name in outputs]

    def _run_side_by_side(self, graph: str, feeds_list, outputs) -> list[list[np.ndarray]]:
        """OpenVINO's own way: the graph compiled with one stream per call side by side, sharing
        the threads, fed through an AsyncInferQueue (each call on whichever request is free)."""
        shape = tuple(feeds_list[0]["images"].shape) if graph == "encoder" else None
        held = self._graphs.get(graph + SIDE_BY_SIDE)
        if held is None or held[2] != shape:
            held = self._graphs[graph + SIDE_BY_SIDE] = self._streams_graph(graph, shape)
        compiled, calls, _ = held
        ports = [compiled.output(name) for name in outputs]
        results: list = [None] * len(feeds_list)

        def keep(request, index: int) -> None:
            results[index] = [
                np.array(request.get_tensor(port).data, np.float32, copy=True) for port in ports
            ]

        calls.set_callback(keep)
        for index, feeds in enumerate(feeds_list):
            calls.start_async(feeds, index, share_inputs=True)  # feeds_list outlives wait_all
        calls.wait_all()
        return results

    def _streams_graph(self, graph: str, shape: tuple[int, ...] | None):
        """(compiled model, AsyncInferQueue, static shape or None) with ``info.side_by_side``
        streams; the encoder static for one slice, the decoder graphs as exported."""
        import openvino as ov

        model = self._core.read_model(str(self.folder / f"{graph}.onnx"))
        if shape is not None:
            model.reshape({model.input(0).get_any_name(): list(shape)})
        config = {
            "INFERENCE_PRECISION_HINT": self._config["INFERENCE_PRECISION_HINT"],
            "NUM_STREAMS": self.info.side_by_side,
            "INFERENCE_NUM_THREADS": cores(self.threads),  # shared by the streams: one each on two cores
        }
        compiled = self._core.compile_model(model, "CPU", config)
        return compiled, ov.AsyncInferQueue(compiled, self.info.side_by_side), shape

    def describe(self) -> dict:
        return info_fields(self.info) | {
            "threads": self.threads,
            "side_by_side": self.info.side_by_side,
            "split_decoder": self.info.split_decoder,
            "openvino": self._version,
            "artifacts": str(self.folder),
        }
