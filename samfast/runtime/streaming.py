"""Slice streaming: walk a volume's slices in one plane, preprocess on a background thread, encode.

At most ``max_in_flight`` prepared batches wait between the worker and the encoder, each in a
staging buffer from a fixed pool, so memory does not grow with the volume. On CUDA the buffers are
pinned and the host-to-device copy of batch k+1 runs on its own stream while batch k computes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from samfast.io.planes import PLANES, plane_view
from samfast.runtime.embedding_cache import EmbeddingCache, content_key, embedding_identity, encode_cached

_END = object()
# Encoder batch sizes chosen when none is given. The CPU gains nothing from batching slices
# (bench/README.md: per-slice encoder time is flat or worse from batch 1 to 4), a GPU does.
AUTO_BATCH = {"cpu": 1, "cuda": 16}


@dataclass
class SliceBatch:
    indices: list[int]  # slice positions along the streamed axis
    embeddings: np.ndarray  # (B, C, h, w), row i is slice indices[i]
    original_size: tuple[int, int]  # (H, W) of every slice in this plane
    others: list[np.ndarray] = field(default_factory=list)  # the same slices on each of ``others``
    encode_ms: list[float | None] = field(default_factory=list)  # per encoder (primary first)
    keys: list[str] | None = None  # with a cache: each slice's content key in it (row order)


def auto_batch_size(predictor) -> int:
    return AUTO_BATCH.get(predictor.backend.info.device.split(":")[0], 1)


class SliceStreamer:
    """Iterate ``SliceBatch``es of a (z, y, x) volume's slices along ``axis``.

    ``normalize`` (e.g. preprocess.normalize_mr_putz, applied to the whole volume first, since
    Putz scales by the volume maximum) is the caller's; the worker runs Predictor.prepare_image on
    each slice. ``cache`` skips the encoder for slices seen before. ``others``: more predictors of
    the same model (a --compare backend) whose encoders get the very same prepared batches.
    ``cancel()`` (or leaving a ``with`` block, or dropping the iterator) stops the worker and frees
    the staging buffers.
    """

    def __init__(
        self,
        predictor,
        volume: np.ndarray,
        axis: int = 0,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        max_in_flight: int = 2,
        cache: EmbeddingCache | None = None,
        slice_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        others: Sequence = (),
    ) -> None:
        if volume.ndim != 3:
            raise ValueError(f"volume must be 3D, got shape {volume.shape}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.predictor = predictor
        self.volume = volume
        self.axis = axis
        self.indices = list(range(volume.shape[axis])) if indices is None else [int(i) for i in indices]
        self.batch_size = int(batch_size or auto_batch_size(predictor))
        self.max_in_flight = max_in_flight
        self.cache = cache
        self.slice_fn = slice_fn
        self.others = list(others)
        self._identity = embedding_identity(predictor) if cache is not None else {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready: queue.Queue = queue.Queue(maxsize=max_in_flight)
        self._free: queue.Queue = queue.Queue()
        self._buffers: list[np.ndarray] = []
        self.peak_in_flight = 0

    # -- buffers ---------------------------------------------------------------------------

    @property
    def buffers_alive(self) -> int:
        """Staging buffers currently allocated (0 before the first and after the last batch)."""
        return len(self._buffers)

    def _allocate(self) -> None:
        size = self.predictor.spec.input_size
        shape = (self.batch_size, 3, size, size)
        # One buffer per batch in flight, one being filled, one being encoded.
        for _ in range(self.max_in_flight + 2):
            self._buffers.append(self._staging_buffer(shape))
            self._free.put(len(self._buffers) - 1)

    def _staging_buffer(self, shape) -> np.ndarray:
        if self._on_cuda():
            import torch

            # Pinned host memory: the H2D copy can run asynchronously, overlapping compute.
            return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()
        return np.empty(shape, np.float32)

    def _on_cuda(self) -> bool:
        return self.predictor.backend.info.on_cuda

    # -- worker ----------------------------------------------------------------------------

    def _slice(self, index: int) -> np.ndarray:
        image = plane_view(self.volume, PLANES[self.axis])[index]
        return image if self.slice_fn is None else self.slice_fn(image)

    def _put(self, q: queue.Queue, item) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for start in range(0, len(self.indices), self.batch_size):
                chunk = self.indices[start : start + self.batch_size]
                buffer_id = None
                while buffer_id is None and not self._stop.is_set():
                    try:
                        buffer_id = self._free.get(timeout=0.05)
                    except queue.Empty:
                        continue
                if buffer_id is None:
                    return
                buffer = self._buffers[buffer_id]
                for row, index in enumerate(chunk):
                    buffer[row] = self.predictor.prepare_image(self._slice(index))
                if not self._put(self._ready, (chunk, buffer_id)):
                    return
                self.peak_in_flight = max(self.peak_in_flight, self._ready.qsize())
            self._put(self._ready, _END)
        except BaseException as error:  # handed to the consumer, raised there
            self._put(self._ready, error)

    # -- consumer --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[SliceBatch]:
        if self._thread is not None:
            raise RuntimeError("a SliceStreamer is iterated once; make a new one")
        self._allocate()
        self._thread = threading.Thread(target=self._work, name="samfast-slice-worker", daemon=True)
        self._thread.start()
        original_size = tuple(int(v) for v in np.delete(self.volume.shape, self.axis))
        try:
            cuda = self._on_cuda() and not self.others
            batches = self._cuda_batches() if cuda else self._cpu_batches()
            for indices, embeddings, times, keys in batches:
                yield SliceBatch(indices, embeddings[0], original_size, embeddings[1:], times, keys)
        finally:
            self.cancel()

    def _next_ready(self):
        item = self._ready.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _cpu_batches(self):
        while (item := self._next_ready()) is not _END:
            chunk, buffer_id = item
            prepared = self._buffers[buffer_id][: len(chunk)]
            outs, times = [], []
            # the cache's keys, computed once here: the caller gets them with the batch
            keys = None if self.cache is None else [content_key(p, self._identity) for p in prepared]
            for n, predictor in enumerate([self.predictor, *self.others]):
                started = time.perf_counter()
                cache, identity, known = (self.cache, self._identity, keys) if n == 0 else (None, {}, None)
                outs.append(encode_cached(predictor.backend, prepared, cache, identity, known))
                times.append(1e3 * (time.perf_counter() - started))
            self._free.put(buffer_id)  # encode_cached copied what it needs out of the buffer
            yield chunk, outs, times, keys

    def _cuda_batches(self):
        """Copy batch k+1 to the GPU on a side stream while batch k computes, then read k back.

        Needs a backend whose info says ``device_tensors`` (torch on CUDA: encode_tensor); others
        get the CPU loop. The cache, if any, is consulted on the host copy before anything moves.
        """
        import torch

        backend = self.predictor.backend
        if not backend.info.device_tensors or self.cache is not None:
            yield from self._cpu_batches()
            return
        device = backend.device
        copy_stream = torch.cuda.Stream(device)
        compute = torch.cuda.current_stream(device)
        size = self.predictor.spec.input_size
        slots = [torch.empty((self.batch_size, 3, size, size), device=device) for _ in range(2)]
        done = [None, None]  # event: compute that read slot s has finished
        pending = None  # (chunk, output tensor, event) of the batch launched last
        k = 0
        while (item := self._next_ready()) is not _END:
            chunk, buffer_id = item
            slot = k % 2
            with torch.cuda.stream(copy_stream):
                if done[slot] is not None:
                    copy_stream.wait_event(done[slot])  # slot free only once batch k-2 computed
                host = torch.from_numpy(self._buffers[buffer_id][: len(chunk)])
                slots[slot][: len(chunk)].copy_(host, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(copy_stream)
            compute.wait_event(copied)
            output = backend.encode_tensor(slots[slot][: len(chunk)])
            done[slot] = torch.cuda.Event()
            done[slot].record(compute)
            if pending is not None:
                yield pending[0], [pending[1].float().cpu().numpy()], [None], None  # waits for batch k-1 only
            copied.synchronize()
            self._free.put(buffer_id)  # host buffer reusable once its copy finished
            pending = (chunk, output)
            k += 1
        if pending is not None:
            yield pending[0], [pending[1].float().cpu().numpy()], [None], None

    def cancel(self) -> None:
        """Stop the worker, drop batches in flight and free every staging buffer."""
        self._stop.set()
        while True:
            try:
                self._ready.get_nowait()
            except queue.Empty:
                break
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._buffers.clear()
        self._free = queue.Queue()

    def __enter__(self) -> SliceStreamer:
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def stream_embeddings(predictor, volume: np.ndarray, **kwargs) -> Iterator[tuple[int, np.ndarray]]:
    """(slice index, (1, C, h, w) embedding) for each slice, in order, through a SliceStreamer."""
    with SliceStreamer(predictor, volume, **kwargs) as streamer:
        for batch in streamer:
            for row, index in enumerate(batch.indices):
                yield index, batch.embeddings[row : row + 1]
