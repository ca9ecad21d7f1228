"""Whole volume, wall clock: `samfast bench brats --protocol points-putz --precision P` on one demo
case vs a naive torch-eager loop (segment-anything style: set_image per slice, predict per point,
fp32, no batching, no cache), each a fresh process timed from start to exit, taking turns.

Both run Putz's 9-point protocol on the same slices (the bench's target slices: tumour core,
>= 100 px). Each side's mean best IoU is printed beside its time, so a fast wrong answer shows.

    flock /work/notes/bench.lock .venv/bin/python bench/volume_wall.py --precision bf16 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASE = "BraTS20_Demo_001"


def naive(threads: int) -> None:
    """The naive loop itself (run in its own process by main)."""
    import numpy as np
    import torch

    from samfast import Predictor
    from samfast.eval.datasets import find_brats_cases, load_case
    from samfast.eval.protocols import run_points_putz
    from samfast.eval.slicing import target_slices
    from samfast.io import find_demo_data
    from samfast.preprocess import normalize_mr_putz

    torch.set_num_threads(threads)
    case = next(c for c in find_brats_cases(find_demo_data())[0] if c.case_id == CASE)
    volume, truth, _ = load_case(case)
    scaled = normalize_mr_putz(volume)
    predictor = Predictor("litemedsam", backend="torch", precision="fp32")
    best = []
    for z in target_slices(truth, 100):
        predictor.set_image(scaled[z])
        best.append(max(s["oracle_iou"] for s in run_points_putz(predictor, truth[z])))
    print(json.dumps({"slices": len(best), "mean_best_iou": float(np.mean(best))}))


def timed(command: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.naive:
        naive(args.threads)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results: dict = {"naive": [], "samfast": [], "load": [os.getloadavg()[0]]}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        fast = [sys.executable, "-m", "samfast", "bench", "brats", "--protocol", "points-putz",
                "--precision", args.precision, "--cases", "1", "--out", str(out), "--fresh"]  # fmt: skip
        slow = [sys.executable, __file__, "--naive", "--threads", str(args.threads)]
        for round_ in range(args.rounds):
            order = [("naive", slow), ("samfast", fast)]
            for name, command in order if round_ % 2 == 0 else order[::-1]:
                seconds, stdout = timed(command, env)
                entry = {"wall_s": seconds}
                if name == "naive":
                    entry |= json.loads(stdout.strip().splitlines()[-1])
                else:
                    summary = json.loads((out / "summary.json").read_text())
                    entry["slices"] = summary["protocols"]["points-putz"]["axial"]["slices"]
                    entry["mean_best_iou"] = summary["protocols"]["points-putz"]["axial"]["selections"][
                        "oracle"
                    ]["iou"]["mean"]
                    entry["backend"] = summary["config"]["backend"]
                results[name].append(entry)
                print(name, json.dumps(entry), flush=True)
    results["load"].append(os.getloadavg()[0])
    ratio = min(e["wall_s"] for e in results["naive"]) / min(e["wall_s"] for e in results["samfast"])
    results["speedup"] = ratio
    print(f"samfast bench brats --precision {args.precision} vs naive: {ratio:.2f}x (best of rounds)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
