"""How close the LiteMedSAM encoder is to this CPU's matrix-product peak: the encoder's FLOPs, the
peak GFLOP/s of one large matrix product in OpenVINO (bf16 and fp32) and in torch, the encoder's own
time (OpenVINO as samfast compiles it, torch eager fp32), all side by side in one run.

The floor of a precision is the encoder's FLOPs at that precision's measured matrix-product peak:
no engine on this CPU runs the encoder faster than that, whatever its graph. The ceiling of the
"encoder vs torch eager fp32" ratio is then torch eager's time over that floor.

FLOPs: torch's FLOP counter on the real encoder (one 256×256 slice), by operator. Peak: OpenVINO
compiles one static MatMul (``--gemm M K N``, 2 FLOP a multiply-add) with samfast's compile
properties (``PERFORMANCE_HINT=LATENCY``, ``--threads`` threads, the precision hint) and runs it
``--calls`` times a round; torch runs the same product with ``torch.mm`` (bf16 through oneDNN).
Rounds take turns between every timed thing; medians over rounds. Reports only; asserts nothing.

    flock /work/notes/bench.lock .venv/bin/python bench/cpu_floor.py --rounds 5 --out run.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIDE = 256


def encoder_flops(encoder) -> tuple[float, dict[str, float]]:
    """Total FLOPs of one slice and the share of each operator (torch's counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        encoder(torch.zeros(1, 3, SIDE, SIDE))
    by_op: Counter = Counter()
    for op, flops in counter.get_flop_counts()["Global"].items():
        by_op[str(op).split(".")[1] if "." in str(op) else str(op)] += flops
    total = float(sum(by_op.values()))
    return total, {op: flops / total for op, flops in by_op.most_common()}


def openvino_matmul(m: int, k: int, n: int, precision: str, threads: int) -> Callable[[], None]:
    import openvino as ov
    import openvino.opset13 as ops

    from samfast.backends.openvino_backend import PRECISION_HINTS

    rng = np.random.default_rng(0)
    a = ops.parameter([m, k], ov.Type.f32, name="a")
    b = ops.constant((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32))
    model = ov.Model([ops.matmul(a, b, False, False)], [a], "matmul")
    compiled = ov.Core().compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
        },
    )
    request = compiled.create_infer_request()
    feed = {0: rng.standard_normal((m, k)).astype(np.float32)}
    return lambda: request.infer(feed)


def torch_matmul(m: int, k: int, n: int, dtype) -> Callable[[], None]:
    import torch

    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)

    def call() -> None:
        with torch.inference_mode():
            torch.mm(a, b)

    return call


def openvino_encoder(path: Path, precision: str, threads: int) -> Callable[[], None]:
    from openvino_layers import compile_encoder

    request = compile_encoder(path, precision, threads, {"PERF_COUNT": False}).create_infer_request()
    image = np.random.default_rng(1).random((1, 3, SIDE, SIDE), dtype=np.float32)
    return lambda: request.infer({0: image})


def torch_encoder(encoder) -> Callable[[], None]:
    import torch

    image = torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))

    def call() -> None:
        with torch.inference_mode():
            encoder(image)

    return call


def timed(call: Callable[[], None], calls: int) -> float:
    """Seconds per call over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def main() -> int:
    import torch
    from openvino_layers import default_encoder

    from samfast.backends.cpu import cpu_flags, cpu_model
    from samfast.models import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gemm", type=int, nargs=3, default=[4096, 1024, 1024], metavar=("M", "K", "N"))
    parser.add_argument("--calls", type=int, default=10, help="matrix products per round")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    m, k, n = args.gemm
    gemm_flops = 2.0 * m * k * n

    encoder = build_model("litemedsam").image_encoder.eval()
    flops, shares = encoder_flops(encoder)
    path = default_encoder()
    products = {
        "openvino bf16 matmul": openvino_matmul(m, k, n, "bf16", args.threads),
        "openvino fp32 matmul": openvino_matmul(m, k, n, "fp32", args.threads),
        "torch bf16 mm": torch_matmul(m, k, n, torch.bfloat16),
        "torch fp32 mm": torch_matmul(m, k, n, torch.float32),
    }
    encoders = {
        "torch eager fp32 encoder": torch_encoder(encoder),
        "openvino bf16 encoder": openvino_encoder(path, "bf16", args.threads),
        "openvino fp32 encoder": openvino_encoder(path, "fp32", args.threads),
    }
    for call in [*products.values(), *encoders.values()]:
        call()  # warm-up: first-call allocations and kernel selection
    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {name: [] for name in [*products, *encoders]}
    for round_ in range(args.rounds):
        names = list(seconds)
        names = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in names:
            if name in products:
                seconds[name].append(timed(products[name], args.calls))
            else:
                seconds[name].append(timed(encoders[name], 1))
        print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]
    median = {name: statistics.median(values) for name, values in seconds.items()}
    peak = {name: gemm_flops / median[name] / 1e9 for name in products}
    eager = median["torch eager fp32 encoder"]
    report = {
        "cpu": cpu_model(),
        "amx": "amx_bf16" in cpu_flags(),
        "threads": args.threads,
        "load": [round(load_before, 2), round(load_after, 2)],
        "encoder_gflop": round(flops / 1e9, 2),
        "encoder_flop_shares": {op: round(share, 4) for op, share in shares.items()},
        "gemm": [m, k, n],
        "peak_gflops": {name: round(value, 1) for name, value in peak.items()},
        "encoder_ms": {name: round(median[name] * 1e3, 1) for name in encoders},
        "encoder_gflops": {name: round(flops / median[name] / 1e9, 1) for name in encoders},
    }
    for precision in ("bf16", "fp32"):
        best = max(peak[f"openvino {precision} matmul"], peak[f"torch {precision} mm"])
        floor = flops / (best * 1e9)
        report[f"{precision}_floor_ms"] = round(floor * 1e3, 1)
        report[f"{precision}_ceiling_vs_eager"] = round(eager / floor, 2)
        openvino = median[f"openvino {precision} encoder"]
        report[f"openvino_{precision}_vs_eager"] = round(eager / openvino, 2)
        report[f"openvino_{precision}_share_of_peak"] = round(floor / openvino, 3)
    line = json.dumps(report)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
