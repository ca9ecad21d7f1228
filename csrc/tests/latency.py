"""Latency of libsamfast against samfast.Predictor on the same slices, side by side in one run.

    .venv/bin/python csrc/tests/latency.py --lib build/csrc/libsamfast.so --fixtures build/csrc/fixtures

(run `make csrc-test` first: it builds the library and the fixtures). Not part of ctest.

Timed per call, for each real BraTS slice (Putz-normalised, tumour-core box):
  * set_slice: C ``samfast_set_slice`` vs ``Predictor.set_image`` (preprocess + encoder; for the C
    library on OpenVINO also the split decoder's image side);
  * predict: C ``samfast_predict`` vs ``Predictor.predict`` with one box, one mask (decoder + mask
    upsampling to the slice), and with a box + click, three masks (a click on a set slice).
Backends: the C library on OpenVINO (ONNX set) and on LibTorch (TorchScript set, when the build has
the plugin), Predictor openvino (same ONNX files), Predictor torchscript (same TorchScript files).
Same process, same thread count for all (LibTorch's pool is shared by the C library and Python
torch; OpenVINO gets INFERENCE_NUM_THREADS = n). The C handles keep one slice (cache_slices 1), so
every set_slice encodes. Calls rotate between backends round by round; the first rounds are
warm-up. Reported: medians, and each backend's median over the first one's. Every C result is
checked against the Predictor of its backend (same mask) before any time is kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CASES, load_case, tumour_slices  # noqa: E402
from samfast_ctypes import Library  # noqa: E402

from samfast import Predictor  # noqa: E402
from samfast.eval.metrics import bounding_box  # noqa: E402
from samfast.eval.prompts import putz_first_point  # noqa: E402
from samfast.preprocess import normalize_mr_putz  # noqa: E402

# name -> (C set format, or None for a Python Predictor backend)
BACKENDS = {"C openvino": "onnx", "openvino": None, "C libtorch": "torchscript", "torchscript": None}
CHECKED_AGAINST = {"C openvino": "openvino", "C libtorch": "torchscript"}


def busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    guest = sum(fields[8:10]) if len(fields) > 9 else 0
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lib", required=True)
    parser.add_argument("--fixtures", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--slices-per-case", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("SAMFAST_ENGINES", str(args.fixtures.parent / "engines"))

    lib = Library(args.lib)
    lib.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    quiet = lambda _: None  # noqa: E731
    backends = [b for b in BACKENDS if BACKENDS[b] != "torchscript" or lib.has_backend("libtorch")]
    models = {
        name: lib.open(
            args.fixtures / "sets" / BACKENDS[name] / "litemedsam", cache_slices=1, threads=args.threads
        )
        for name in backends
        if BACKENDS[name]
    }
    predictors = {
        name: Predictor("litemedsam", backend=name, log=quiet, threads=args.threads)
        for name in backends
        if not BACKENDS[name]
    }
    assert torch.get_num_threads() == args.threads

    cases = []
    for case in CASES:
        volume, truth = load_case(case)
        scaled = normalize_mr_putz(volume)
        for z in tumour_slices(truth, args.slices_per_case + 2)[1:-1]:
            x, y, _ = putz_first_point(truth[z])
            cases.append((f"{case} z{z}", scaled[z], bounding_box(truth[z]), np.array([[x, y]], np.float32)))

    def run(backend: str, image, box, click, kind: str):
        if backend in models:  # the C model's argument names, then the Predictor's
            set_slice, predict = models[backend].set_slice, models[backend].predict
            box_only = {"multimask": False}
            with_click = {"points": click, "labels": [1], "multimask": True}
        else:
            set_slice, predict = predictors[backend].set_image, predictors[backend].predict
            box_only = {"multimask_output": False}
            with_click = {"point_coords": click, "point_labels": [1], "multimask_output": True}
        if kind == "set":
            return set_slice(image)
        return predict(box=box, **(box_only if kind == "box" else with_click))

    kinds = {
        "set": "set_slice / set_image",
        "box": "predict, 1 box, 1 mask",
        "click": "predict, box + click, 3 masks",
    }
    times: dict[tuple[str, str], list[float]] = {(b, k): [] for b in backends for k in kinds}
    checked = 0
    busy0, own0, wall0 = busy_seconds(), time.process_time(), time.perf_counter()
    for round_index in range(args.warmup + args.rounds):
        shift = round_index % len(backends)
        order = backends[shift:] + backends[:shift]
        for _, image, box, click in cases:
            results = {}
            for backend in order:
                for kind in kinds:
                    start = time.perf_counter()
                    out = run(backend, image, box, click, kind)
                    elapsed = time.perf_counter() - start
                    if round_index >= args.warmup:
                        times[(backend, kind)].append(elapsed)
                    if kind != "set":
                        results[(backend, kind)] = out
            for kind in ("box", "click"):  # never time a wrong answer
                for c_name, py_name in CHECKED_AGAINST.items():
                    if c_name not in models:
                        continue
                    c_masks, c_iou, _ = results[(c_name, kind)]
                    t_masks, t_iou, _ = results[(py_name, kind)]
                    agree = np.mean(c_masks == t_masks) > 0.999 and np.allclose(c_iou, t_iou, atol=1e-3)
                    if not agree:
                        raise SystemExit(f"{c_name} and Predictor {py_name} disagree on {kind}: not timed")
                    checked += 1
    wall = time.perf_counter() - wall0
    busy = busy_seconds()
    others = None if busy is None or busy0 is None else (busy - busy0 - (time.process_time() - own0)) / wall
    for model in models.values():
        model.close()

    print(f"LiteMedSAM, {len(cases)} BraTS slices ({', '.join(name for name, *_ in cases)}), 240x240")
    print(
        f"{date.today()} · {cpu_model()} · {os.cpu_count()} CPUs · {args.threads} threads for every "
        f"backend · torch {torch.__version__} · libsamfast {lib.version} · {args.rounds} rounds after "
        f"{args.warmup} warm-up"
    )
    print(f"other processes kept {others:.2f} cores busy on average" if others is not None else "")
    print(f"{checked} C results checked against the Predictor of their backend before timing\n")
    first = backends[0]
    print("| call | " + " | ".join(backends) + " |")
    print("| --- |" + " ---: |" * len(backends))
    for kind, label in kinds.items():
        medians = {b: statistics.median(times[(b, kind)]) * 1e3 for b in backends}
        cells = [f"{medians[first]:.1f} ms"] + [
            f"{medians[b]:.1f} ms ({medians[b] / medians[first]:.2f}×)" for b in backends[1:]
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\n(medians; in brackets: that backend's median over {first}'s, > 1 means {first} is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
