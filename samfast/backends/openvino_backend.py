"""OpenVINO CPU backend over the project's exported ONNX set, fp32 or bf16 (AMX / AVX-512 BF16).

OpenVINO reads the same encoder.onnx / decoder.onnx ONNX Runtime runs; bf16 is its inference
precision hint (weights and activations in bf16 on AMX tiles, accumulation in fp32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samfast.backends.base import Prompts
from samfast.errors import InputError

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
# (Its parity rows, fp32 and bf16, are in samfast.eval.parity.TOLERANCES with the others.)


def cpu_supports(precision: str) -> bool:
    """Whether OpenVINO's CPU plugin runs ``precision`` natively here (bf16: AVX-512 BF16 or AMX)."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return precision == "fp32" or PRECISION_HINTS[precision].upper() in {c.upper() for c in capabilities}


class OpenVinoBackend:
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
        self.folder = Path(folder)
        self.low_res_size = low_res_size
        self.device = device
        self.precision = precision
        self.threads = threads
        self._version = ov.get_version()
        self._core, self._config = ov.Core(), config
        self._compiled: dict[str, tuple] = {}
        # The decoder split at the prompt, when the set has it (as OnnxRuntimeBackend): the
        # precision hint applies to both sides, so a bf16 click runs bf16 end to end.
        self.splits_decoder = all(
            (self.folder / f"{name}.onnx").is_file() for name in ("decoder_image", "decoder_prompt")
        )

    def _graph(self, name: str, shape: tuple[int, ...] | None = None):
        """(compiled model, infer request) of one graph, compiled on first use: an encoder-only or
        decoder-only user holds one graph. Infer requests keep their buffers between calls.

        With ``shape`` (the encoder: one input) the graph is compiled for the first call's input
        shape as a static shape, for which OpenVINO picks its kernels (~3 % faster than the dynamic
        batch on 2 cores); a later call with another shape recompiles it once with the exported
        dynamic batch, which then stays (one compiled graph is held: the encoder is ~300 MiB)."""
        held = self._compiled.get(name)
        if held is not None and (shape is None or held[2] in (None, tuple(shape))):
            return held[:2]
        model = self._core.read_model(str(self.folder / f"{name}.onnx"))
        static = tuple(shape) if shape is not None and held is None else None
        if static is not None:
            model.reshape({model.input(0).get_any_name(): list(static)})
        compiled = self._core.compile_model(model, "CPU", self._config)
        self._compiled[name] = (compiled, compiled.create_infer_request(), static)
        return self._compiled[name][:2]

    def release(self, *names: str) -> None:
        """Drop the named compiled graphs (all when none is named), handing their memory back; a
        later call compiles them again. E.g. the encoder, once a volume has streamed."""
        for name in names or list(self._compiled):
            self._compiled.pop(name, None)

    def encode(self, images: np.ndarray) -> np.ndarray:
        model, request = self._graph("encoder", shape=images.shape)
        result = request.infer({"images": np.ascontiguousarray(images, np.float32)})
        return np.array(result[model.output(0)], np.float32, copy=True)

    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        model, request = self._graph("decoder")
        feeds = prompts.to_sam_onnx(self.low_res_size)
        feeds["image_embeddings"] = np.ascontiguousarray(embedding, np.float32)
        result = request.infer(feeds)
        masks = np.array(result[model.output("low_res_masks")], np.float32, copy=True)
        iou = np.array(result[model.output("iou_predictions")], np.float32, copy=True)
        return masks, iou

    def image_state(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """(B, C, h, w) embeddings -> the split decoder's prompt-independent state, B rows."""
        from samfast.artifacts.graphs import STATE_NAMES

        model, request = self._graph("decoder_image")
        result = request.infer({"image_embeddings": np.ascontiguousarray(embeddings, np.float32)})
        return {n: np.array(result[model.output(n)], np.float32, copy=True) for n in STATE_NAMES}

    def decode_state(self, state: dict[str, np.ndarray], prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """``decode`` from an image_state, for prompts without a mask input."""
        if prompts.mask_input is not None:
            raise ValueError("decode_state takes no mask_input; decode() handles mask prompts")
        model, request = self._graph("decoder_prompt")
        feeds = prompts.to_sam_onnx(self.low_res_size)
        feeds = {"point_coords": feeds["point_coords"], "point_labels": feeds["point_labels"], **state}
        result = request.infer(feeds)
        masks = np.array(result[model.output("low_res_masks")], np.float32, copy=True)
        iou = np.array(result[model.output("iou_predictions")], np.float32, copy=True)
        return masks, iou

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": self.device,
            "precision": self.precision,
            "threads": self.threads,
            "split_decoder": self.splits_decoder,
            "openvino": self._version,
            "artifacts": str(self.folder),
        }
