"""Wall time of `samfast bench brats` in one process vs `--ray local --workers 1` and `--workers 2`.

Run side by side on one machine, under the bench lock when the machine is shared:

    flock /work/notes/bench.lock .venv/bin/python bench/ray_overhead.py --slices-per-case 12

Each mode is a fresh command (Python start, model load, Ray start where asked, the run, the report),
so the ratio includes everything a user waits for. The rows of every mode must be identical.
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

MODES = {
    "single process": [],
    "ray local, 1 worker": ["--ray", "local", "--workers", "1"],
    "ray local, 2 workers": ["--ray", "local", "--workers", "2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices-per-case", type=int, default=12, help="0: every target slice.")
    parser.add_argument("--protocol", default="box,points-putz")
    parser.add_argument("--repeat", type=int, default=1, help="Rounds over all modes.")
    parser.add_argument("--modes", default="0,1,2", help="Which modes, by index: 0 single, 1 and 2 workers.")
    args = parser.parse_args()
    chosen = [list(MODES)[int(i)] for i in args.modes.split(",")]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    walls: dict[str, list[float]] = {mode: [] for mode in chosen}
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeat):
            for mode in chosen:
                extra = MODES[mode]
                out = Path(folder) / mode.replace(" ", "_").replace(",", "")
                command = [sys.executable, "-m", "samfast", "bench", "brats", "--fresh", "--out", str(out)]
                command += ["--protocol", args.protocol]
                if args.slices_per_case:
                    command += ["--slices-per-case", str(args.slices_per_case)]
                started = time.perf_counter()
                subprocess.run(command + extra, check=True, env=env, capture_output=True)
                walls[mode].append(time.perf_counter() - started)
                results[mode] = (out / "results.jsonl").read_text()
                summary = json.loads((out / "summary.json").read_text())
                latency = summary["latency"]
                print(
                    f"{mode}: {walls[mode][-1]:.1f} s wall, {latency['slices']} slices, run "
                    f"{latency['wall_s']:.1f} s, encoder median "
                    f"{latency['encoder_ms_per_slice']['median']:.0f} ms/slice",
                    flush=True,
                )
    for mode, values in walls.items():
        line = f"{mode}: best {min(values):.1f} s"
        if "single process" in walls:
            line += f" = {min(values) / min(walls['single process']):.3f}× single process"
        print(line)
    same = len(set(results.values())) == 1
    print(f"results.jsonl identical across modes: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
