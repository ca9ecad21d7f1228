"""LiteMedSAM latency, onnxruntime vs torch eager, side by side in one pytest-benchmark run.

Groups (each holds a torch and an onnxruntime benchmark, same thread count, same input):

* ``litemedsam-encoder``: ``backend.encode`` of one (1, 3, 256, 256) preprocessed BraTS slice;
* ``litemedsam-decoder-1box``: ``backend.decode`` of that slice's embedding with one box prompt;
* ``litemedsam-decoder-16box``: the same with a batch of 16 boxes.

Only the backend call is timed: image preprocessing, prompt transforms and mask upsampling (which
Predictor does in torch for every backend) stay outside. Every timed result is checked against
the torch eager reference, so a broken export is never timed. Nothing here asserts on speed;
compare.py (and the terminal summary of bench/conftest.py) report the ratios.
"""

from __future__ import annotations

import os
import time

import numpy as np
import onnxruntime
import pytest
import torch

BACKENDS = ("torch", "onnxruntime")  # torch first: the onnxruntime entry records the ratio

ENCODER_ROUNDS, ENCODER_WARMUP = 15, 3
DECODER_ROUNDS = {1: (30, 3), 16: (10, 2)}  # boxes -> (rounds, warmup rounds)
# Low-res mask logits reach ~±40; the export reproduces them to ~1e-4 (measured).
LOGITS_ATOL = 1e-3
IOU_ATOL = 1e-3



def load_average() -> float | None:
    """1-minute load average, recorded beside each timing: these machines are shared and noisy."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """How many cores *other* processes kept busy while a benchmark ran (warmup included).

    Machine busy time minus this process's own CPU time, over wall time. The 1-minute load average
    lags by a minute; this does not, so it is what compare.py uses to flag a disturbed timing.
    """

    def __enter__(self):
        self._busy, self._self, self._wall = _busy_seconds(), _self_cpu(), time.perf_counter()
        self.other_cores = None
        return self

    def __exit__(self, *exc) -> None:
        busy, own, wall = _busy_seconds(), _self_cpu(), time.perf_counter()
        if busy is not None and self._busy is not None and wall > self._wall:
            other = (busy - self._busy) - (own - self._self)
            self.other_cores = round(max(other, 0.0) / (wall - self._wall), 3)


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


# group -> backend -> median seconds, filled as the run goes (torch runs first in each group).
_MEDIANS: dict[str, dict[str, float]] = {}


def _record(benchmark, bench_backends, slice_input, backend: str, what: str, loadavg_before, watch) -> None:
    """Thread count, versions, load and (for onnxruntime) the ratio to the torch median."""
    info = benchmark.extra_info
    info.update({
        "backend": backend,
        "what": what,
        "model": "litemedsam",
        "threads": bench_backends.threads,
        "torch_num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "input": slice_input.description,
        "embedding_max_abs_diff": bench_backends.embedding_max_abs_diff,
        "loadavg_before": loadavg_before,
        "loadavg_after": load_average(),
        "other_processes_cpu_cores": watch.other_cores,
    })
    if backend == "onnxruntime":
        session = bench_backends.backend(backend).encoder.get_session_options()
        info["ort_intra_op_num_threads"] = session.intra_op_num_threads
    stats = getattr(benchmark, "stats", None)  # None under --benchmark-disable
    if stats is None:
        return
    group = _MEDIANS.setdefault(benchmark.group, {})
    group[backend] = stats.stats.median
    if backend != "torch" and "torch" in group:
        info["speedup_vs_torch_median"] = round(group["torch"] / group[backend], 3)


@pytest.fixture(scope="module")
def reference_decode(bench_backends, slice_input):
    """torch eager decoder outputs for the 1-box and 16-box prompts (not timed)."""
    torch_backend = bench_backends.backend("torch")
    embedding = bench_backends.embeddings["torch"]
    return {count: torch_backend.decode(embedding, slice_input.prompts(count)) for count in (1, 16)}


@pytest.mark.benchmark(group="litemedsam-encoder")
@pytest.mark.parametrize("backend", BACKENDS)
def test_encoder(benchmark, bench_backends, slice_input, backend):
    encode = bench_backends.backend(backend).encode
    batch = slice_input.batch
    assert batch.shape == (1, 3, 256, 256) and batch.dtype == np.float32
    before = load_average()
    with CpuWatch() as watch:
        embedding = benchmark.pedantic(encode, args=(batch,), rounds=ENCODER_ROUNDS,
                                       warmup_rounds=ENCODER_WARMUP, iterations=1)
    _record(benchmark, bench_backends, slice_input, backend, "encoder", before, watch)
    np.testing.assert_allclose(embedding, bench_backends.embeddings["torch"], rtol=0,
                               atol=bench_backends.embedding_atol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("count", [1, 16], ids=["1box", "16box"])
def test_decoder(benchmark, bench_backends, slice_input, reference_decode, backend, count):
    benchmark.group = f"litemedsam-decoder-{count}box"
    predictor = bench_backends.predictors[backend]
    prompts = slice_input.prompts(count)
    assert prompts.boxes.shape == (count, 4)
    embedding = bench_backends.embeddings[backend]  # each backend decodes its own embedding
    rounds, warmup = DECODER_ROUNDS[count]
    before = load_average()
    with CpuWatch() as watch:
        low_res, iou = benchmark.pedantic(predictor.backend.decode, args=(embedding, prompts), rounds=rounds,
                                          warmup_rounds=warmup, iterations=1)
    what = "decoder, 1 box" if count == 1 else f"decoder, {count} boxes"
    _record(benchmark, bench_backends, slice_input, backend, what, before, watch)
    ref_low_res, ref_iou = reference_decode[count]
    side = predictor.spec.low_res_size
    assert low_res.shape == ref_low_res.shape == (count, 4, side, side)
    np.testing.assert_allclose(low_res, ref_low_res, rtol=0, atol=LOGITS_ATOL)
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=IOU_ATOL)
