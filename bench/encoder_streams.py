"""Two cores, two slices: the LiteMedSAM encoder's slices per second with one inference request on
all threads against one request per thread (one slice each), side by side in one run.

OpenVINO (bf16 and fp32): one request with ``--threads`` threads taking slices one at a time (what
the backend does today), one request taking a static batch of ``--threads`` slices, and
``NUM_STREAMS = --threads`` streams of one thread each fed through an AsyncInferQueue. ONNX Runtime
fp32: one session with ``--threads`` intra-op threads, against ``--threads`` sessions of one thread
each, run from as many Python threads (the session releases the GIL), both with the backend's
session options. The modes take turns, the
order rotating each round; every mode's embeddings must equal one-request's before its time counts
(max |Δ| is printed).

    .venv/bin/python bench/encoder_streams.py --slices 8 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SIDE = 256


def openvino_modes(encoder: Path, precision: str, threads: int) -> dict:
    import openvino as ov

    from samfast.backends.openvino_backend import PRECISION_HINTS

    core = ov.Core()
    hint = PRECISION_HINTS[precision]

    def compiled(batch: int, config: dict):
        model = core.read_model(str(encoder))
        model.reshape({model.input(0).get_any_name(): [batch, 3, SIDE, SIDE]})
        return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint} | config)

    latency = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    one = compiled(1, latency)
    one_request = one.create_infer_request()
    batched = compiled(threads, latency)
    batched_request = batched.create_infer_request()
    streams = compiled(1, {"NUM_STREAMS": threads, "INFERENCE_NUM_THREADS": threads})
    queue = ov.AsyncInferQueue(streams, threads)

    def one_by_one(slices: np.ndarray) -> np.ndarray:
        return np.concatenate([np.array(one_request.infer({0: s[None]})[0]) for s in slices])

    def in_batches(slices: np.ndarray) -> np.ndarray:
        out = [
            np.array(batched_request.infer({0: slices[i : i + threads]})[0])
            for i in range(0, len(slices), threads)
        ]
        return np.concatenate(out)

    def per_stream(slices: np.ndarray) -> np.ndarray:
        results: list = [None] * len(slices)

        def done(request, index):
            results[index] = np.array(request.get_output_tensor(0).data, copy=True)

        queue.set_callback(done)
        for index, image in enumerate(slices):
            queue.start_async({0: image[None]}, index)
        queue.wait_all()
        return np.concatenate(results)

    label = f"openvino/{precision}"
    return {
        f"{label} 1 request x {threads} threads": one_by_one,
        f"{label} 1 request, batch {threads}": in_batches,
        f"{label} {threads} streams x 1 thread": per_stream,
    }


def onnxruntime_modes(encoder: Path, threads: int) -> dict:
    import onnxruntime as ort

    from samfast.backends.onnxruntime_backend import session_options

    def session(intra: int):
        # the backend's own settings (idle threads do not spin): with ONNX Runtime's defaults the
        # two-thread session spins between calls and looks ~25 % slower than it is
        return ort.InferenceSession(str(encoder), session_options(intra), providers=["CPUExecutionProvider"])

    shared = session(threads)
    singles = [session(1) for _ in range(threads)]
    pool = ThreadPoolExecutor(threads)

    def one_by_one(slices: np.ndarray) -> np.ndarray:
        return np.concatenate([shared.run(None, {"images": s[None]})[0] for s in slices])

    def per_session(slices: np.ndarray) -> np.ndarray:
        def run(worker: int) -> list:
            own = singles[worker]
            return [
                (i, own.run(None, {"images": slices[i : i + 1]})[0])
                for i in range(worker, len(slices), threads)
            ]

        parts = [item for part in pool.map(run, range(threads)) for item in part]
        return np.concatenate([array for _, array in sorted(parts, key=lambda p: p[0])])

    return {
        f"onnxruntime/fp32 1 session x {threads} threads": one_by_one,
        f"onnxruntime/fp32 {threads} sessions x 1 thread": per_session,
    }


def main() -> int:
    from samfast.backends.cpu import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, help="encoder.onnx (default: the LiteMedSAM set's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--skip", action="append", default=[], help="openvino/bf16, openvino/fp32, onnxruntime"
    )
    args = parser.parse_args()
    if args.encoder is None:
        from openvino_layers import default_encoder

        args.encoder = default_encoder()
    modes: dict = {}
    for precision in ("bf16", "fp32"):
        if f"openvino/{precision}" not in args.skip:
            modes |= openvino_modes(args.encoder, precision, args.threads)
    if "onnxruntime" not in args.skip:
        modes |= onnxruntime_modes(args.encoder, args.threads)
    slices = np.random.default_rng(0).random((args.slices, 3, SIDE, SIDE), dtype=np.float32)
    reference: dict[str, np.ndarray] = {}
    deltas = {}
    for name, run in modes.items():  # warm-up, and the check that every mode gives the same rows
        family = name.split(" ")[0]
        out = run(slices)
        reference.setdefault(family, out)
        deltas[name] = float(np.abs(out - reference[family]).max())
    names = list(modes)
    times: dict[str, list[float]] = {name: [] for name in names}
    load_before = os.getloadavg()[0]
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            modes[name](slices)
            times[name].append(time.perf_counter() - start)
    load_after = os.getloadavg()[0]
    print(
        f"{cpu_model()}, {args.threads} threads, {args.slices} slices a call, {args.rounds} rounds, "
        f"modes alternating, load {load_before:.1f} -> {load_after:.1f}"
    )
    print("| mode | slices/s (median) | best | vs first of its engine | max abs diff to first |")
    print("| --- | ---: | ---: | ---: | ---: |")
    firsts: dict[str, float] = {}
    for name in names:
        rate = args.slices / statistics.median(times[name])
        family = name.split(" ")[0]
        firsts.setdefault(family, rate)
        print(
            f"| {name} | {rate:.2f} | {args.slices / min(times[name]):.2f} | {rate / firsts[family]:.3f}× | "
            f"{deltas[name]:.1e} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
