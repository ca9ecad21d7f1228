"""A samfast command's first run (empty engines folder: the set is exported on the way) against its
second: wall time, peak RSS of the user process and of its largest child (the export), torch or not.

    python bench/first_run.py                    # `samfast bench brats` (LiteMedSAM, shipped demo), twice
    python bench/first_run.py --repeat 1 -- segment VOLUME --box ... --out mask.nii.gz
    python bench/first_run.py --engines engines --runs 1 -- bench brats --protocol points-putz ...

With --engines, that folder is used as it is (warm runs only). Each run is a fresh interpreter that
runs the CLI and, at its exit, reads its own peak RSS (RUSAGE_SELF) and its largest child's
(RUSAGE_CHILDREN: on a first run, the export process); /usr/bin/time would report the larger of the two.
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

DEFAULT_COMMAND = ["bench", "brats", "--backend", "onnxruntime", "--precision", "fp32"]

_RUN = """
import json, resource, sys
report, sys.argv = sys.argv[1], ["samfast", *sys.argv[2:]]
from samfast.cli import app
code = 0
try:
    app()
except SystemExit as stop:
    code = stop.code or 0
mb = lambda who: resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB
with open(report, "w") as out:
    json.dump({"code": code, "rss_mb": mb(resource.RUSAGE_SELF), "child_rss_mb": mb(resource.RUSAGE_CHILDREN),
               "torch": "torch" in sys.modules}, out)
"""


def machine() -> dict:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _text(["lscpu"]).splitlines()
            if line.startswith("Model name")
        ),
        "unknown",
    )
    return {"cpu": model, "cores": os.cpu_count()}


def _text(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def load() -> str:
    return _text(["uptime"]).split("load average:")[-1].strip()


def run_once(command: list[str], engines: Path, out: Path, label: str) -> dict:
    """One CLI run in a fresh interpreter with SAMFAST_ENGINES=engines; its output goes to a log."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        env = os.environ | {"SAMFAST_ENGINES": str(engines), "SAMFAST_CACHE": scratch}
        argv = [a.replace("{out}", str(out / label)) for a in command]
        before = load()
        started = time.perf_counter()
        with open(out / f"{label}.log", "w") as log:
            done = subprocess.run(
                [sys.executable, "-c", _RUN, str(report), *argv], stdout=log, stderr=log, env=env
            )
        wall = time.perf_counter() - started
        row = json.loads(report.read_text()) if report.is_file() else {"code": done.returncode}
    return {"run": label, "wall_s": round(wall, 1), "load_before": before, "load_after": load(), **row}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=2, help="first/second pairs, each from an empty folder")
    parser.add_argument("--engines", type=Path, help="use this engines folder as it is: warm runs only")
    parser.add_argument("--runs", type=int, default=1, help="with --engines: how many runs")
    parser.add_argument("--out", type=Path, default=Path("runs/first-run"), help="logs, outputs, rows.jsonl")
    parser.add_argument("command", nargs="*", help="samfast arguments ('{out}' becomes the run's folder)")
    args = parser.parse_args()
    command = args.command or [*DEFAULT_COMMAND, "--out", "{out}"]
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps({**machine(), "command": ["samfast", *command]}))
    rows = []
    if args.engines:
        rows = [run_once(command, args.engines, args.out, f"warm{i + 1}") for i in range(args.runs)]
    else:
        for pair in range(1, args.repeat + 1):
            with tempfile.TemporaryDirectory(prefix="samfast-engines-") as engines:
                for which in ("first", "second"):
                    rows.append(run_once(command, Path(engines), args.out, f"{which}{pair}"))
                    print(json.dumps(rows[-1]), flush=True)
    with open(args.out / "rows.jsonl", "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    print("| run | exit | wall s | peak RSS MB: user process | largest child | torch | load before → after |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        print(
            f"| {row['run']} | {row.get('code')} | {row['wall_s']} | {row.get('rss_mb', 0):.0f} | "
            f"{row.get('child_rss_mb', 0):.0f} | {row.get('torch')} | "
            f"{row['load_before']} → {row['load_after']} |"
        )
    for first, second in zip(rows[::2], rows[1::2], strict=False):
        if first["run"].startswith("first"):
            print(f"{first['run']} / {second['run']}: {first['wall_s'] / second['wall_s']:.2f}x")
    return 0 if all(row.get("code") == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
