"""Export choices for the LiteMedSAM encoder, side by side in one run: each variant is exported to
ONNX, checked against torch eager fp32, and timed on OpenVINO bf16 / fp32 and ONNX Runtime fp32.

A variant is a set of EncoderForExport options. All (variant, engine) pairs take turns call by call,
the order rotating each round, so a busy machine slows them alike; the backends are samfast's own
(OpenVinoBackend, OnnxRuntimeBackend) on the exported folder; the input is one (1, 3, 256, 256)
slice of uniform [0, 1) noise (LiteMedSAM's min-max normalised range; the time does not depend on it).

    .venv/bin/python bench/encoder_export_variants.py --rounds 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = {
    "separate-qkv": {"separate_qkv": True},
    "channels-last": {"separate_qkv": True, "channels_last": True},
}
ENGINES = ("openvino/bf16", "openvino/fp32", "onnxruntime/fp32")


def export_encoder(model, options: dict, folder: Path) -> None:
    from samfast.artifacts.graphs import DEFAULT_OPSET, ENCODER_FILE
    from samfast.export.onnx_export import _export_graph
    from samfast.export.wrappers import (
        ENCODER_DYNAMIC_AXES,
        ENCODER_INPUTS,
        ENCODER_OUTPUTS,
        EncoderForExport,
        example_encoder_inputs,
    )

    folder.mkdir(parents=True)
    _export_graph(
        EncoderForExport(model, **options),
        example_encoder_inputs(model.samfast_spec, batch=2),
        folder / ENCODER_FILE,
        ENCODER_INPUTS,
        ENCODER_OUTPUTS,
        ENCODER_DYNAMIC_AXES,
        DEFAULT_OPSET,
        {"graph": "encoder"},
    )


def main() -> int:
    from samfast.backends.cpu import cpu_model
    from samfast.backends.onnxruntime_backend import OnnxRuntimeBackend
    from samfast.backends.openvino_backend import OpenVinoBackend
    from samfast.models import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--engine", action="append", choices=ENGINES)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model("litemedsam").eval()
    rng = np.random.default_rng(0)
    batch = rng.random((1, 3, 256, 256), dtype=np.float32)
    with torch.no_grad():
        reference = model.image_encoder(torch.from_numpy(batch)).numpy()
    low_res = model.samfast_spec.low_res_size
    work = Path(tempfile.mkdtemp(prefix="encoder-variants-"))
    runners = {}
    for variant in args.variant or list(VARIANTS):
        export_encoder(model, VARIANTS[variant], work / variant)
        for engine in args.engine or ENGINES:
            backend_name, precision = engine.split("/")
            kind = OpenVinoBackend if backend_name == "openvino" else OnnxRuntimeBackend
            backend = kind(work / variant, low_res, precision=precision, threads=args.threads)
            delta = float(np.abs(backend.encode(batch) - reference).max())
            runners[(variant, engine)] = (backend, delta)
    names = list(runners)
    times: dict[tuple, list[float]] = {name: [] for name in names}
    load_before = os.getloadavg()[0]
    for round_index in range(args.rounds + 1):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name][0].encode(batch)
            if round_index:  # the first round warms up
                times[name].append((time.perf_counter() - start) * 1e3)
    load_after = os.getloadavg()[0]
    print(
        f"{cpu_model()}, {args.threads} threads, load {load_before:.1f} -> {load_after:.1f}, "
        f"{args.rounds} rounds, calls alternating"
    )
    first = names[0][0]
    print("| variant | engine | median ms | min ms | vs " + first + " | max abs diff to torch fp32 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for variant, engine in names:
        median = statistics.median(times[(variant, engine)])
        base = statistics.median(times[(first, engine)])
        print(
            f"| {variant} | {engine} | {median:.1f} | {min(times[(variant, engine)]):.1f} | "
            f"{base / median:.3f}× | {runners[(variant, engine)][1]:.2e} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
