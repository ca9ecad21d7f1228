"""Where OpenVINO's CPU plugin spends the LiteMedSAM encoder's time: per-layer performance counters
grouped by layer type and by primitive (exec type), fp32 and bf16, the graph compiled as samfast does.

The encoder is compiled like OpenVinoBackend's first call (static input shape, the same compile
properties) with PERF_COUNT on; each configuration runs a warm-up call and then ``--runs`` calls,
and every layer's real time is averaged over those calls. Counts of Reorder layers and of
reference (``ref_*``) kernels show work that runs off the optimised kernels.

    .venv/bin/python bench/openvino_layers.py --runs 5
    .venv/bin/python bench/openvino_layers.py --encoder /tmp/set/encoder.onnx --precision bf16
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def default_encoder() -> Path:
    """The LiteMedSAM ONNX set's encoder (exported into the engines folder if missing)."""
    from samfast.models import resolve_weights
    from samfast.runtime.sets import backend_building_missing_set

    backend = backend_building_missing_set(
        "onnxruntime", "litemedsam", resolve_weights("litemedsam"), log=lambda message: None
    )
    return Path(backend.folder) / "encoder.onnx"


def compile_encoder(path: Path, precision: str, threads: int, extra: dict | None = None):
    import openvino as ov

    from samfast.backends.openvino_backend import PRECISION_HINTS

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.input(0).get_any_name(): [1, 3, 256, 256]})
    config = {
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "PERF_COUNT": True,
    } | (extra or {})
    return core.compile_model(model, "CPU", config)


def profile(compiled, runs: int) -> tuple[list[dict], list[float]]:
    """Per-layer mean real time (ms) over ``runs`` calls after one warm-up, and each call's wall ms."""
    request = compiled.create_infer_request()
    image = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    request.infer({0: image})
    totals: dict[str, dict] = {}
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: image})
        walls.append((time.perf_counter() - start) * 1e3)
        for info in request.profiling_info:
            if info.status.name != "EXECUTED":
                continue
            row = totals.setdefault(
                info.node_name, {"type": info.node_type, "exec": info.exec_type, "ms": 0.0}
            )
            row["ms"] += info.real_time.total_seconds() * 1e3 / runs
    return list(totals.values()), walls


def grouped(layers: list[dict], key: str) -> list[tuple[str, int, float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for layer in layers:
        groups[layer[key]].append(layer["ms"])
    return sorted(((name, len(ms), sum(ms)) for name, ms in groups.items()), key=lambda g: -g[2])


def print_table(title: str, rows: list[tuple[str, int, float]], total: float, top: int) -> None:
    print(f"\n| {title} | layers | ms | share |\n| --- | ---: | ---: | ---: |")
    for name, count, ms in rows[:top]:
        print(f"| {name} | {count} | {ms:.2f} | {100 * ms / total:.1f} % |")
    rest = rows[top:]
    if rest:
        print(
            f"| ({len(rest)} more) | {sum(r[1] for r in rest)} | {sum(r[2] for r in rest):.2f} | "
            f"{100 * sum(r[2] for r in rest) / total:.1f} % |"
        )


def summary(layers: list[dict]) -> dict:
    reorders = [layer for layer in layers if layer["type"] == "Reorder"]
    refs = [layer for layer in layers if layer["exec"].startswith("ref")]
    return {
        "layers": len(layers),
        "sum_ms": sum(layer["ms"] for layer in layers),
        "reorders": len(reorders),
        "reorder_ms": sum(layer["ms"] for layer in reorders),
        "ref_kernels": len(refs),
        "ref_ms": sum(layer["ms"] for layer in refs),
        "ref_types": sorted({f"{layer['type']}:{layer['exec']}" for layer in refs}),
    }


def main() -> int:
    import openvino as ov

    from samfast.backends.cpu import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, help="encoder.onnx (default: the LiteMedSAM set's)")
    parser.add_argument("--precision", action="append", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=12, help="rows per table")
    args = parser.parse_args()
    encoder = args.encoder or default_encoder()
    print(f"{cpu_model()}, {args.threads} threads, OpenVINO {ov.get_version()}, {encoder}")
    for precision in args.precision or ["fp32", "bf16"]:
        load = os.getloadavg()[0]
        layers, walls = profile(compile_encoder(encoder, precision, args.threads), args.runs)
        facts = summary(layers)
        print(
            f"\n### {precision}: wall median {np.median(walls):.1f} ms over {args.runs} calls, "
            f"layers' sum {facts['sum_ms']:.1f} ms, {facts['layers']} executed layers, "
            f"load {load:.1f} -> {os.getloadavg()[0]:.1f}"
        )
        print(
            f"Reorder layers: {facts['reorders']} ({facts['reorder_ms']:.2f} ms); "
            f"ref_* kernels: {facts['ref_kernels']} ({facts['ref_ms']:.2f} ms) "
            f"{', '.join(facts['ref_types']) or '-'}"
        )
        print_table("layer type", grouped(layers, "type"), facts["sum_ms"], args.top)
        print_table("primitive (exec type)", grouped(layers, "exec"), facts["sum_ms"], args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
