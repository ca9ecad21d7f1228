"""Whole-volume points-putz, command line against the naive loop: wall time and peak RSS, side by side.

    flock /work/notes/bench.lock .venv/bin/python bench/cli_volume.py --rounds 2 [--backend onnxruntime]

Each round runs, one after the other in fresh processes (start-up, model load and volume read
included), ``python -m samfast bench brats --protocol points-putz --cases 1`` (the engine bench brats
runs: streamed slices, one encode each, batched protocol steps) and bench/naive_putz.py (torch eager,
set_image per slice, predict per point). Checks that both placed the same points and report IoUs
within 1e-3, then prints one JSON line: wall seconds and peak RSS per run, the ratio of medians, the
CPU model and the load average. Reports only; asserts nothing about time.
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
    parser.add_argument("--backend", default="onnxruntime")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="samfast-cli-volume-"))
    samfast = [sys.executable, "-m", "samfast", "bench", "brats", "--protocol", "points-putz", "--cases", "1"]
    samfast += ["--backend", args.backend, "--out", str(work / "bench"), "--fresh"]
    naive = [sys.executable, str(HERE / "naive_putz.py"), "--case", CASE, "--out", str(work / "naive.json")]
    load_before = os.getloadavg()
    runs: dict[str, list] = {"samfast": [], "naive": []}
    for _ in range(args.rounds):
        for name, command in (("samfast", samfast), ("naive", naive)):
            runs[name].append(timed(command))
    check = agreement(json.loads((work / "naive.json").read_text()), work / "bench" / "results.jsonl")
    median = {name: statistics.median(wall for wall, _ in values) for name, values in runs.items()}
    print(json.dumps({
        "what": f"whole-volume points-putz on {CASE}, CLI wall time (start-up included)",
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "backend": args.backend,
        "wall_s": {name: [round(w, 1) for w, _ in values] for name, values in runs.items()},
        "peak_rss_mib": {name: [round(r) for _, r in values] for name, values in runs.items()},
        "speedup_vs_naive": round(median["naive"] / median["samfast"], 2),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        **check,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
