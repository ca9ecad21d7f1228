"""`samfast segment` on a whole demo case from its tumour core's 3D box: the 3D mode against the same
box on every slice (`--per-slice`), CLI wall time with start-up, side by side in one run.

    flock /work/notes/bench.lock .venv/bin/python bench/segment_3d_wall.py --rounds 2 \\
        [--run onnxruntime --run openvino:bf16]

Each round runs, one after the other in fresh processes, both modes for each ``--run
BACKEND[:PRECISION]`` (default onnxruntime fp32), alternating which goes first. Prints one JSON
line: wall seconds per run, the ratio of medians (3D / per-slice), 3D Dice of each, the CPU model
and the load average. Reports only; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from cli_volume import cpu_model, timed

REPO = Path(__file__).resolve().parents[1]
CASE = "BraTS20_Demo_001"


def core_box(label: Path) -> list[str]:
    core = np.isin(sitk.GetArrayFromImage(sitk.ReadImage(str(label))), (1, 4))
    zs, ys, xs = (np.flatnonzero(core.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    return [str(int(v)) for v in (xs[0], ys[0], zs[0], xs[-1], ys[-1], zs[-1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run", action="append", metavar="BACKEND[:PRECISION]")
    parser.add_argument("--case", default=CASE)
    args = parser.parse_args()
    folder = REPO / "data" / "brats_demo" / args.case
    image, label = folder / f"{args.case}_t1ce.nii.gz", folder / f"{args.case}_seg.nii.gz"
    work = Path(tempfile.mkdtemp(prefix="samfast-segment-3d-"))
    commands = {}
    for run in args.run or ["onnxruntime"]:
        backend, _, precision = run.partition(":")
        for mode in ("3d", "per-slice"):
            name = f"{backend} {precision or 'fp32'} {mode}"
            out = work / (name.replace(" ", "-") + ".nii.gz")
            command = [sys.executable, "-m", "samfast", "segment", str(image), "--box", *core_box(label)]
            command += ["--backend", backend, "--precision", precision or "fp32", "--out", str(out)]
            command += ["--label", str(label)] + (["--per-slice"] if mode == "per-slice" else [])
            commands[name] = (command, out)
    load_before = os.getloadavg()
    runs: dict[str, list] = {name: [] for name in commands}
    names = list(commands)
    for k in range(args.rounds):
        for name in names if k % 2 == 0 else names[::-1]:
            runs[name].append(timed(commands[name][0]))
    median = {name: statistics.median(w for w, _ in values) for name, values in runs.items()}
    dice = {
        name: round(json.loads(out.with_suffix("").with_suffix(".json").read_text())["dice_3d"], 4)
        for name, (_, out) in commands.items()
    }
    ratios = {
        name.removesuffix(" 3d"): round(median[name] / median[name.removesuffix("3d") + "per-slice"], 3)
        for name in commands
        if name.endswith(" 3d")
    }
    print(json.dumps({
        "what": f"samfast segment on {args.case} from the tumour core box, CLI wall time with start-up",
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "wall_s": {name: [round(w, 1) for w, _ in values] for name, values in runs.items()},
        "ratio_3d_over_per_slice": ratios,
        "dice_3d": dice,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
