"""Whole-volume points-putz with the CPU's encoder batch at 1 (the default) and at 2 (OpenVINO runs
the two slices side by side, one per core): CLI wall time and whether the rows are identical.

Each run is a fresh ``samfast bench brats --protocol points-putz --cases 1`` with the slice
streamer's CPU batch (``samfast.runtime.streaming.AUTO_BATCH["cpu"]``) set for that process only;
the order alternates each round. Rows are compared with their timing fields left out.

    .venv/bin/python bench/volume_encoder_batch.py --precision bf16 --rounds 2
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

SET_BATCH = (
    "import runpy, sys; import samfast.runtime.streaming as streaming; "
    "streaming.AUTO_BATCH['cpu'] = int(sys.argv[1]); sys.argv = ['samfast'] + sys.argv[2:]; "
    "runpy.run_module('samfast', run_name='__main__')"
)


def rows(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out.append({k: v for k, v in row.items() if not any(t in k for t in ("ms", "time", "_s"))})
    return out


def main() -> int:
    from samfast.backends.cpu import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="volume-encoder-batch-"))
    walls: dict[int, list[float]] = {1: [], 2: []}
    load_before = os.getloadavg()[0]
    for round_index in range(args.rounds):
        for batch in (1, 2) if round_index % 2 == 0 else (2, 1):
            command = [
                sys.executable,
                "-c",
                SET_BATCH,
                str(batch),
                "bench",
                "brats",
                "--protocol",
                "points-putz",
            ]
            command += ["--cases", "1", "--backend", "openvino", "--precision", args.precision]
            command += ["--out", str(work / f"batch{batch}"), "--fresh"]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            walls[batch].append(time.perf_counter() - start)
    one, two = rows(work / "batch1" / "results.jsonl"), rows(work / "batch2" / "results.jsonl")
    print(f"{cpu_model()}, openvino {args.precision}, load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"wall s, batch 1: {[round(w, 1) for w in walls[1]]}; batch 2: {[round(w, 1) for w in walls[2]]}")
    print(f"batch 1 / batch 2 (medians): {statistics.median(walls[1]) / statistics.median(walls[2]):.3f}x")
    print(f"rows: {len(one)}, identical: {one == two}")
    return 0 if one == two else 1


if __name__ == "__main__":
    raise SystemExit(main())
