"""Side-by-side ratios from a pytest-benchmark JSON: onnxruntime vs torch eager, per group.

    .venv/bin/python bench/compare.py bench/results/latest.json

Every group of the bench holds one torch and one onnxruntime benchmark measured in the same
pytest run; the ratio is torch median / onnxruntime median (> 1: onnxruntime is faster). It only
reports. ``--min-encoder-ratio X`` makes it exit 1 when the encoder ratio is below X, for whoever
wants a gate; the benchmark itself never asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REFERENCE = "torch"
CANDIDATE = "onnxruntime"
ENCODER_GROUP = "litemedsam-encoder"
# Flag a group when other processes kept more than this many cores busy while it was timed.
BUSY_OTHER_CORES = 0.2


def _backend(entry: dict) -> str | None:
    return (entry.get("extra_info") or {}).get("backend") or (entry.get("params") or {}).get("backend")


def compare(benchmarks: list[dict]) -> list[dict]:
    """One row per group that has both backends: medians, ratio, threads, load averages."""
    groups: dict[str, dict[str, dict]] = {}
    for entry in benchmarks:
        backend = _backend(entry)
        if backend in (REFERENCE, CANDIDATE) and entry.get("stats"):
            groups.setdefault(entry.get("group") or entry["name"], {})[backend] = entry
    rows = []
    for group, pair in groups.items():
        if REFERENCE not in pair or CANDIDATE not in pair:
            continue
        ref, cand = pair[REFERENCE], pair[CANDIDATE]
        ref_info, cand_info = ref.get("extra_info") or {}, cand.get("extra_info") or {}
        threads = {ref_info.get("threads"), cand_info.get("threads")}
        keys = ("loadavg_before", "loadavg_after")
        loads = [info[key] for info in (ref_info, cand_info) for key in keys if info.get(key) is not None]
        rows.append({
            "group": group,
            "what": cand_info.get("what") or ref_info.get("what") or group,
            "torch_median_s": ref["stats"]["median"],
            "onnxruntime_median_s": cand["stats"]["median"],
            "torch_rounds": ref["stats"].get("rounds"),
            "onnxruntime_rounds": cand["stats"].get("rounds"),
            "ratio": ref["stats"]["median"] / cand["stats"]["median"],
            "threads": threads.pop() if len(threads) == 1 else sorted(threads, key=str),
            "max_loadavg": max(loads) if loads else None,
            "other_cpu_cores": _max_or_none(
                info.get("other_processes_cpu_cores") for info in (ref_info, cand_info)
            ),
        })
    # encoder first, then the rest in file order
    rows.sort(key=lambda row: row["group"] != ENCODER_GROUP)
    return rows


def _max_or_none(values) -> float | None:
    values = [value for value in values if value is not None]
    return max(values) if values else None


def _speed(ratio: float) -> str:
    if ratio >= 1:
        return f"{ratio:.2f}× faster"
    return f"{ratio:.2f}× faster, i.e. {1 / ratio:.2f}× slower"


def report_lines(rows: list[dict], cpu_count: int | None = None) -> list[str]:
    lines = []
    for row in rows:
        threads = row["threads"]
        threads_text = f"{threads} threads" if isinstance(threads, int) else f"threads DIFFER: {threads}"
        lines.append(
            f"onnxruntime vs torch eager {row['what']}: {_speed(row['ratio'])} "
            f"(median, same run, {threads_text})"
        )
        detail = (f"    medians: torch {row['torch_median_s'] * 1e3:.1f} ms, "
                  f"onnxruntime {row['onnxruntime_median_s'] * 1e3:.1f} ms "
                  f"({row['torch_rounds']} / {row['onnxruntime_rounds']} rounds)")
        busy = False
        if row.get("other_cpu_cores") is not None:
            # CPU other processes used during the timing (machine busy time minus the bench's own).
            detail += f"; other processes used {row['other_cpu_cores']:.2f} cores"
            busy = row["other_cpu_cores"] > BUSY_OTHER_CORES
        elif row["max_loadavg"] is not None:
            detail += f"; max 1-min load average {row['max_loadavg']:.2f}"
            # The bench keeps `threads` runnable threads itself; much more means someone else ran too.
            busy = isinstance(threads, int) and row["max_loadavg"] > max(threads, cpu_count or 0) + 1
        if busy:
            detail += "  << machine was busy: rerun before trusting this ratio"
        lines.append(detail)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="pytest --benchmark-json output file(s)")
    parser.add_argument("--min-encoder-ratio", type=float, default=None,
                        help="exit 1 when the encoder ratio is below this (off by default)")
    args = parser.parse_args(argv)
    status = 0
    for path in args.json:
        data = json.loads(path.read_text())
        rows = compare(data.get("benchmarks", []))
        machine = data.get("machine_info") or {}
        cpu = (machine.get("cpu") or {}).get("brand_raw") or machine.get("processor") or "?"
        cpu_count = (data.get("samfast") or {}).get("cpu_count") or (machine.get("cpu") or {}).get("count")
        if len(args.json) > 1 or not rows:
            print(f"{path}:")
        print(f"    run {data.get('datetime', '?')} on {machine.get('node', '?')} ({cpu}, {cpu_count} CPUs)")
        if not rows:
            print("    no group holds both a torch and an onnxruntime benchmark")
            status = max(status, 2)
            continue
        for line in report_lines(rows, cpu_count):
            print(line)
        encoder = next((row for row in rows if row["group"] == ENCODER_GROUP), None)
        if args.min_encoder_ratio is not None:
            if encoder is None or encoder["ratio"] < args.min_encoder_ratio:
                got = "no encoder group" if encoder is None else f"{encoder['ratio']:.2f}×"
                print(f"encoder ratio below the required {args.min_encoder_ratio:.2f}×: {got}")
                status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
