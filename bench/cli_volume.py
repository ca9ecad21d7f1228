"""Whole-volume points-putz, command line against the naive loop: wall time and peak RSS, side by side.

    flock /work/notes/bench.lock .venv/bin/python bench/cli_volume.py --rounds 2 \\
        [--run onnxruntime --run openvino:bf16]

Each round runs, one after the other in fresh processes (start-up, model load and volume read
included), ``python -m samfast bench brats --protocol points-putz --cases 1`` (the engine bench brats
runs: streamed slices, one encode each, batched protocol steps) and bench/naive_putz.py (torch eager,
set_image per slice, predict per point); each ``--run BACKEND[:PRECISION]`` is one samfast command
per round (default: onnxruntime at fp32). Checks that every fp32 run placed the naive loop's points
and reports IoUs within 1e-3 (a reduced precision is judged by the accuracy gate instead: `bench
brats --precision P --compare torch`), then prints one JSON line: wall seconds and peak RSS per
run, the ratio of medians, the CPU model and the load average. Reports only; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASE = "BraTS20_Demo_001"
IOU_ATOL = 1e-3


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {child.stderr.read()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def agreement(naive: dict, results: Path) -> dict:
    steps: dict[int, list] = {}
    for line in results.read_text().splitlines():
        row = json.loads(line)
        if row["row"] == "step":
            steps.setdefault(row["slice"], []).append(row)
    assert sorted(steps) == sorted(int(z) for z in naive), "different slices"
    within = total = 0
    for z, expected in naive.items():
        got = steps[int(z)]
        assert [s["points"] for s in got] == [points for points, _ in expected], f"slice {z}: points differ"
        for s, (_, ious) in zip(got, expected, strict=True):
            within += sum(abs(a - b) <= IOU_ATOL for a, b in zip(s["ious"], ious, strict=True))
            total += len(ious)
    return {"slices": len(naive), "identical_points": True, "ious_within_1e-3": f"{within}/{total}"}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run", action="append", metavar="BACKEND[:PRECISION]")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="samfast-cli-volume-"))
    commands = {}
    for run in args.run or ["onnxruntime"]:
        backend, _, precision = run.partition(":")
        name = f"samfast {backend} {precision or 'fp32'}"
        out = work / name.replace(" ", "-")
        command = [sys.executable, "-m", "samfast", "bench", "brats", "--protocol", "points-putz"]
        command += ["--cases", "1", "--backend", backend, "--precision", precision or "fp32"]
        command += ["--out", str(out), "--fresh"]
        commands[name] = (command, out, precision in ("", "fp32"))
    naive = [sys.executable, str(HERE / "naive_putz.py"), "--case", CASE, "--out", str(work / "naive.json")]
    load_before = os.getloadavg()
    runs: dict[str, list] = {name: [] for name in [*commands, "naive"]}
    for _ in range(args.rounds):
        for name in runs:
            runs[name].append(timed(commands[name][0] if name in commands else naive))
    expected = json.loads((work / "naive.json").read_text())
    check = {
        name: agreement(expected, out / "results.jsonl") for name, (_, out, fp32) in commands.items() if fp32
    }
    median = {name: statistics.median(wall for wall, _ in values) for name, values in runs.items()}
    print(json.dumps({
        "what": f"whole-volume points-putz on {CASE}, CLI wall time (start-up included)",
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "wall_s": {name: [round(w, 1) for w, _ in values] for name, values in runs.items()},
        "peak_rss_mib": {name: [round(r) for _, r in values] for name, values in runs.items()},
        "speedup_vs_naive": {name: round(median["naive"] / median[name], 2) for name in commands},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "agreement_with_naive": check,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
