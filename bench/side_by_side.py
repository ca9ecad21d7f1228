"""Calls in turn against calls side by side, on the backends themselves: a program step's decoder
rows (``decode_rows``) and a batch's encoder slices (``encode``), LiteMedSAM, one run.

Each backend is opened once with all the cores; "in turn" is the same backend with
``info.side_by_side`` set to 1 (every call on all threads, one after another: one slice or one row
a call), "side by side" its own setting (one call per core, two at most). The modes alternate each
round; both must give the same arrays bit for bit before a time counts. Prints a markdown table
and one JSON line.

    flock /work/notes/bench.lock .venv/bin/python bench/side_by_side.py --rounds 3 \\
        [--run onnxruntime --run openvino:fp32 --run openvino:bf16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import numpy as np

ROWS = 12  # rows of one program step (eval.run's rows_per_batch for LiteMedSAM)
SLICES = 4


def backend_for(run: str):
    from samfast.models import resolve_weights
    from samfast.runtime.sets import backend_building_missing_set

    name, _, precision = run.partition(":")
    weights = resolve_weights("litemedsam")
    return backend_building_missing_set(name, "litemedsam", weights, precision=precision or "fp32")


def step_inputs(backend, seed: int = 0):
    from samfast.backends.base import Prompts

    rng = np.random.default_rng(seed)
    slices = rng.random((SLICES, 3, 256, 256), dtype=np.float32)
    embeddings = backend.encode(slices)
    rows = [n % SLICES for n in range(ROWS)]
    prompts = Prompts(
        point_coords=rng.uniform(60, 200, (ROWS, 3, 2)).astype(np.float32),
        point_labels=np.tile(np.array([[1.0, 1.0, 0.0]], np.float32), (ROWS, 1)),
    )
    return slices, embeddings, rows, prompts


def encode_slices(backend, slices: np.ndarray) -> np.ndarray:
    """The batch side by side where the backend runs so, else one slice a call."""
    if backend.info.side_by_side >= 2:
        return backend.encode(slices)
    return np.concatenate([backend.encode(image[None]) for image in slices])


def measure(run: str, rounds: int) -> dict:
    """{"<run> decoder rows" / "<run> encoder slices": per-call ms in turn and side by side}."""
    backend = backend_for(run)
    own = backend.info
    in_turn = dataclasses.replace(own, side_by_side=1)
    slices, embeddings, rows, prompts = step_inputs(backend)
    work = {
        "decoder rows": (ROWS, lambda: backend.decode_rows(embeddings, rows, prompts)),
        # in turn: one slice a call (a batch in one call is another computation, not bit-equal)
        "encoder slices": (SLICES, lambda: (encode_slices(backend, slices),)),
    }
    table = {}
    for what, (count, call) in work.items():
        times: dict[str, list[float]] = {"in turn": [], "side by side": []}
        outputs = {}
        for round_ in range(rounds + 1):  # round 0 warms up and checks equality
            order = [("in turn", in_turn), ("side by side", own)]
            for mode, info in order if round_ % 2 == 0 else order[::-1]:
                backend.info = info
                started = time.perf_counter()
                out = call()
                if round_:
                    times[mode].append(time.perf_counter() - started)
                else:
                    outputs[mode] = out
        backend.info = own
        same = all(np.array_equal(a, b) for a, b in zip(*outputs.values(), strict=True))
        assert same, f"{run} {what}: side by side changed the outputs"
        turn, side = (statistics.median(times[m]) for m in ("in turn", "side by side"))
        table[f"{run} {what}"] = {
            "in_turn_ms_each": round(1e3 * turn / count, 2),
            "side_by_side_ms_each": round(1e3 * side / count, 2),
            "ratio": round(turn / side, 3),
            "identical": same,
        }
    return table


def main() -> int:
    from samfast.backends.cpu import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", metavar="BACKEND[:PRECISION]")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    table = {}
    for run in args.run or ["onnxruntime", "openvino:fp32", "openvino:bf16"]:
        table |= measure(run, args.rounds)
    print(f"{cpu_model()}, {os.cpu_count()} cores, load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| run | in turn ms each | side by side ms each | ratio | identical |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, row in table.items():
        turn, side = row["in_turn_ms_each"], row["side_by_side_ms_each"]
        print(f"| {name} | {turn} | {side} | {row['ratio']}x | {row['identical']} |")
    print(json.dumps({"cpu": cpu_model(), "rows": ROWS, "slices": SLICES, "results": table}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
