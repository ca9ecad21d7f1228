"""Prompt-protocol benchmark on BraTS-layout cases: every protocol's step trajectory per slice.

Same resumable slices.jsonl as the box bench; one line per (slice, backend, protocol) holds all steps.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from samfast.eval.box_bench import ROWS_FILE, SUMMARY_FILE, append_row, pending_work, read_rows, start_run
from samfast.eval.datasets import Case
from samfast.eval.metrics import bounding_box
from samfast.eval.protocols import Step, run_box, run_box_points, run_points_mazurowski, run_points_putz
from samfast.io import atomic_write_bytes

PROTOCOLS = ("box", "points-putz", "points-mazurowski", "box-points")
MAX_POINTS = 9
MAX_CLICKS = 5


def slice_rng(seed: int, case_id: str, z: int) -> np.random.Generator:
    """A generator per slice, so a resumed or reordered run draws exactly the same prompts."""
    return np.random.default_rng((seed, zlib.crc32(case_id.encode()), z))


def run_protocol(protocol: str, predictor, gt: np.ndarray, rng: np.random.Generator) -> list[Step]:
    """One protocol on one slice whose image is already set on ``predictor``."""
    if protocol == "box":
        return run_box(predictor, gt, bounding_box(gt))
    if protocol == "points-putz":
        return run_points_putz(predictor, gt, MAX_POINTS)
    if protocol == "points-mazurowski":
        return run_points_mazurowski(predictor, gt, rng, MAX_POINTS)
    if protocol == "box-points":
        return run_box_points(predictor, gt, bounding_box(gt), MAX_CLICKS)
    raise ValueError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")


def run_protocol_bench(
    cases: list[Case],
    predictors: dict,
    out_dir: Path,
    config: dict,
    protocols: list[str],
    seed: int = 0,
    min_area: int = 100,
    fresh: bool = False,
    progress: Callable[[Iterable, int], Iterable] = lambda items, total: items,
) -> dict:
    """Every protocol with every predictor on every slice with >= ``min_area`` target pixels."""
    out_dir = Path(out_dir)
    rows = start_run(out_dir, config, fresh)
    # A line is written only when a slice's whole trajectory is done, so a torn line is the only
    # partial state an interruption can leave, and start_run already drops it.
    done = {(r["case"], r["slice"], r["backend"], r["protocol"]) for r in rows}
    loaded, scaled, work = pending_work(
        cases,
        predictors,
        config["target"],
        min_area,
        lambda key: any((*key, p) not in done for p in protocols),
    )
    with open(out_dir / ROWS_FILE, "a") as sink:
        for case, z, name in progress(work, len(work)):
            truth = loaded[case.case_id][1][z]
            predictor = predictors[name]
            started = time.perf_counter()
            predictor.set_image(scaled[case.case_id][z])  # one embedding serves every protocol
            set_image_ms = 1e3 * (time.perf_counter() - started)
            for protocol in protocols:
                if (case.case_id, z, name, protocol) in done:
                    continue
                started = time.perf_counter()
                steps = run_protocol(protocol, predictor, truth, slice_rng(seed, case.case_id, z))
                row = {
                    "case": case.case_id,
                    "grade": case.grade,
                    "slice": z,
                    "backend": name,
                    "protocol": protocol,
                    "area_px": int(truth.sum()),
                    "set_image_ms": set_image_ms,
                    "protocol_ms": 1e3 * (time.perf_counter() - started),
                    "steps": steps,
                }
                append_row(sink, row)
    summary = summarise_protocols(read_rows(out_dir), config)
    atomic_write_bytes(out_dir / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _curve(rows: list[dict], key: str) -> list[float]:
    """Mean IoU after each step; a slice that stopped early (perfect mask) keeps its last value."""
    length = max(len(r["steps"]) for r in rows)
    padded = [[s[key] for s in r["steps"]] for r in rows]
    padded = [values + [values[-1]] * (length - len(values)) for values in padded]
    return [float(v) for v in np.mean(padded, axis=0)]


def summarise_protocols(rows: list[dict], config: dict) -> dict:
    """Per protocol and backend: mean IoU after 1..N steps (oracle and suggested), best IoU, times."""
    summary: dict = {"config": config, "protocols": {}}
    for protocol in sorted({r["protocol"] for r in rows}):
        entry = summary["protocols"].setdefault(protocol, {})
        for name in sorted({r["backend"] for r in rows}):
            mine = [r for r in rows if r["protocol"] == protocol and r["backend"] == name]
            if not mine:
                continue
            # Putz's headline metric: the best oracle IoU reached at any step, per slice.
            best = [max(s["oracle_iou"] for s in r["steps"]) for r in mine]
            entry[name] = {
                "slices": len(mine),
                "mean_best_iou_oracle": float(np.mean(best)),
                "mean_iou_oracle": _curve(mine, "oracle_iou"),
                "mean_iou_suggested": _curve(mine, "suggested_iou"),
                "median_set_image_ms": float(np.median([r["set_image_ms"] for r in mine])),
                "median_protocol_ms": float(np.median([r["protocol_ms"] for r in mine])),
            }
    return summary
