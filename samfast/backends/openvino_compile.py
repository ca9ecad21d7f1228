"""The encoder on OpenVINO as two inference requests side by side, one slice each, for batches.

One request with two threads spends part of each layer waiting for the slower thread; two requests
of one thread each keep both cores busy (bench/encoder_streams.py: more slices per second at bf16
and fp32 on two cores, the embeddings bit for bit the same). Each request holds its own activations
(~115 MiB at bf16), so there are two at most; with more cores they share them.
"""

from __future__ import annotations

import os

import numpy as np

PER_SLICE_GRAPH = "encoder_per_slice"  # its key among OpenVinoBackend's compiled graphs
MAX_REQUESTS = 2


def core_count(threads: int | None) -> int:
    """The backend's threads, else the cores this process may use."""
    return int(threads) if threads else len(os.sched_getaffinity(0))


class PerSliceRequests:
    """The encoder compiled for one slice (a static shape) on ``streams`` streams sharing ``threads``
    threads, fed through an AsyncInferQueue: slice i of a batch runs on whichever request is free."""

    def __init__(
        self, core, path, slice_shape: tuple[int, ...], precision_hint: str, streams: int, threads: int
    ) -> None:
        import openvino as ov

        model = core.read_model(str(path))
        model.reshape({model.input(0).get_any_name(): [1, *slice_shape]})
        config = {
            "INFERENCE_PRECISION_HINT": precision_hint,
            "NUM_STREAMS": streams,
            "INFERENCE_NUM_THREADS": threads,  # on two cores: one thread per stream
        }
        self.slice_shape = tuple(slice_shape)
        self.compiled = core.compile_model(model, "CPU", config)
        self.queue = ov.AsyncInferQueue(self.compiled, streams)
        self.queue.set_callback(self._keep)
        self._rows: list[np.ndarray | None] = []

    def _keep(self, request, index: int) -> None:
        self._rows[index] = np.array(request.get_output_tensor(0).data, np.float32, copy=True)

    def encode(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, np.float32)
        self._rows = [None] * len(images)
        for index in range(len(images)):
            self.queue.start_async({0: images[index : index + 1]}, index)
        self.queue.wait_all()
        return np.concatenate(self._rows)


def per_slice_requests(backend, images: np.ndarray) -> PerSliceRequests | None:
    """The backend's per-slice requests for this batch (compiled on first use and held with its
    other graphs), or None where one request does better: a single slice, or a single thread."""
    threads = core_count(backend.threads)
    streams = min(threads, MAX_REQUESTS)
    if len(images) < 2 or streams < 2:
        return None
    held = backend._graphs.get(PER_SLICE_GRAPH)
    if held is None or held[0].slice_shape != tuple(images.shape[1:]):
        requests = PerSliceRequests(
            backend._core,
            backend.folder / "encoder.onnx",
            images.shape[1:],
            backend._config["INFERENCE_PRECISION_HINT"],
            streams,
            threads,
        )
        backend._graphs[PER_SLICE_GRAPH] = held = (requests,)
    return held[0]
