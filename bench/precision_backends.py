"""Backend × precision on this CPU, side by side in one run: encoder ms per slice, one click on a
cached embedding, the ratios to torch eager fp32, and the task accuracy gate's verdicts.

Times the configurations `samfast tune` tries (samfast.tune.time_configurations: turns call by
call, order rotating, one warm-up round) plus ONNX Runtime bf16, which is probed: its CPU provider
has no bf16 MatMul kernel, so it cannot run the model at all. The gate column comes from bench brats
runs (``--gate openvino/bf16=runs/x/summary.json``) or the profile of `samfast tune`.

    flock /work/notes/bench.lock .venv/bin/python bench/precision_backends.py --rounds 7 \\
        --gate openvino/bf16=/tmp/gate/summary.json --json bench/results/precision-backends-<machine>.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch


def onnxruntime_bf16() -> str | None:
    """Why ONNX Runtime runs no bf16 on this CPU (None if a bf16 MatMul session opens)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    value = [helper.make_tensor_value_info(n, TensorProto.BFLOAT16, [64, 64]) for n in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "g", value[:2], value[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as error:  # the provider's own refusal is the finding
        return " ".join(str(error).split())[:160]
    return None


def gate_cell(summary_path: str) -> dict:
    summary = json.loads(open(summary_path).read())
    gate = summary["precision_gate"]
    worst = max(
        gate["protocols"].values(),
        key=lambda v: max(abs(v["delta_mean_dice"]), abs(v["delta_mean_best_iou"])),
    )
    return {
        "passed": gate["passed"],
        "slices": worst["slices"],
        "protocols": len(gate["protocols"]),
        "worst_delta": max(abs(worst["delta_mean_dice"]), abs(worst["delta_mean_best_iou"])),
        "source": summary_path,
    }


def main() -> int:
    from samfast import Predictor
    from samfast.artifacts.manifest import dist_version
    from samfast.backends.cpu import cpu_model
    from samfast.eval.tuning import candidates, demo_case_slices, time_configurations

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gate", action="append", default=[], help="backend/precision=summary.json")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet = lambda message: None  # noqa: E731
    predictors = {"torch/fp32": Predictor("litemedsam", backend="torch", precision="fp32", log=quiet)}
    for backend, precision in candidates("cpu"):
        predictors[f"{backend}/{precision}"] = Predictor(
            "litemedsam", backend=backend, precision=precision, threads=args.threads, log=quiet
        )
    image, truth = max(demo_case_slices(8), key=lambda s: int(s[1].sum()))
    load_before = os.getloadavg()[0]
    figures = time_configurations(predictors, image, truth, args.rounds)
    load_after = os.getloadavg()[0]
    gates = {name: gate_cell(path) for name, path in (g.split("=", 1) for g in args.gate)}
    ref = figures["torch/fp32"]
    print(f"{cpu_model()}, {args.threads} threads, load {load_before:.1f} -> {load_after:.1f}")
    print("| backend | precision | encoder ms | click ms | encoder speed-up | click / eager decoder | gate |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for name, f in figures.items():
        backend, precision = name.split("/")
        gate = gates.get(name)
        verdict = "reference" if name == "torch/fp32" else "fp32 parity rows" if precision == "fp32" else "—"
        if gate:
            verdict = (
                f"{'pass' if gate['passed'] else 'FAIL'} ({gate['protocols']} protocols, {gate['slices']} "
                f"slices, worst |Δ| {gate['worst_delta']:.4f})"
            )
        f["speedup"] = ref["encoder_ms"] / f["encoder_ms"]
        f["click_share"] = f["click_ms"] / ref["click_ms"]
        print(
            f"| {backend} | {precision} | {f['encoder_ms']:.0f} | {f['click_ms']:.1f} | {f['speedup']:.2f}× "
            f"| {100 * f['click_share']:.1f} % | {verdict} |"
        )
    refusal = onnxruntime_bf16()
    print(f"| onnxruntime | bf16 | — | — | — | — | not runnable: {refusal} |")
    if args.json:
        record = {
            "cpu": cpu_model(),
            "threads": args.threads,
            "rounds": args.rounds,
            "load_average": [load_before, load_after],
            "versions": {d: dist_version(d) for d in ("torch", "onnxruntime", "openvino", "samfast")},
            "figures": figures,
            "gates": gates,
            "onnxruntime_bf16": refusal,
        }
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
