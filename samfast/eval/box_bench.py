"""Box-prompt benchmark on BraTS-layout cases: every backend on the same slices, side by side.

Tight tumour box per slice (no jitter); rows are appended to slices.jsonl as they finish, so an
interrupted run resumes where it stopped. The papers' point protocols live in protocol_bench.py.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from samfast.errors import InputError
from samfast.eval.datasets import Case, load_case
from samfast.eval.metrics import bounding_box, dice, iou
from samfast.io import atomic_write_bytes
from samfast.preprocess import normalize_mr_putz

ROWS_FILE = "slices.jsonl"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"


def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.astype(bool))).decode()


def _unpack(text: str, shape: tuple[int, int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))
    return bits[: shape[0] * shape[1]].reshape(shape).astype(bool)


def append_row(sink, row: dict) -> None:
    """One finished row, flushed and fsynced so it survives a crash or Ctrl-C."""
    sink.write(json.dumps(row) + "\n")
    sink.flush()
    os.fsync(sink.fileno())


def read_rows(out_dir: Path) -> list[dict]:
    """Finished rows; a line cut short by an interruption is ignored (it is redone)."""
    path = out_dir / ROWS_FILE
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def start_run(out_dir: Path, config: dict, fresh: bool) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / CONFIG_FILE
    if fresh:
        for name in (ROWS_FILE, CONFIG_FILE, SUMMARY_FILE):
            (out_dir / name).unlink(missing_ok=True)
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        if previous != config:
            changed = sorted(k for k in config if previous.get(k) != config[k])
            raise InputError(
                f"{out_dir} holds results of another run ({', '.join(changed)} differ): "
                "pass --fresh or another --out"
            )
    else:
        atomic_write_bytes(config_path, (json.dumps(config, indent=2) + "\n").encode())
    _drop_torn_tail(out_dir / ROWS_FILE)
    return read_rows(out_dir)


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left half-written by a kill, so appended rows start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def pending_work(
    cases: list[Case], predictors: dict, target: str, min_area: int, todo: Callable[[tuple], bool]
):
    """Load every case once and list the (case, slice, backend) items still to run: slices with
    at least ``min_area`` target pixels for which ``todo((case_id, z, backend))`` holds."""
    loaded = {case.case_id: load_case(case, target) for case in cases}
    work = [
        (case, int(z), name)
        for case in cases
        for z in np.flatnonzero(loaded[case.case_id][1].sum(axis=(1, 2)) >= min_area)
        for name in predictors
        if todo((case.case_id, int(z), name))
    ]
    scaled = {cid: normalize_mr_putz(volume) for cid, (volume, _, _) in loaded.items()}
    return loaded, scaled, work


def run_box_bench(
    cases: list[Case],
    predictors: dict,
    out_dir: Path,
    config: dict,
    min_area: int = 100,
    fresh: bool = False,
    progress: Callable[[Iterable, int], Iterable] = lambda items, total: items,
) -> dict:
    """Run every predictor on every slice with at least ``min_area`` target pixels; return the summary."""
    out_dir = Path(out_dir)
    rows = start_run(out_dir, config, fresh)
    done = {(r["case"], r["slice"], r["backend"]) for r in rows}
    loaded, scaled, work = pending_work(
        cases, predictors, config["target"], min_area, lambda key: key not in done
    )
    with open(out_dir / ROWS_FILE, "a") as sink:
        for case, z, name in progress(work, len(work)):
            truth = loaded[case.case_id][1][z]
            predictor = predictors[name]
            started = time.perf_counter()
            predictor.set_image(scaled[case.case_id][z])
            encoded = time.perf_counter()
            masks, scores, _ = predictor.predict(box=bounding_box(truth), multimask_output=False)
            finished = time.perf_counter()
            row = {
                "case": case.case_id,
                "grade": case.grade,
                "slice": z,
                "backend": name,
                "area_px": int(truth.sum()),
                "dice": dice(masks[0], truth),
                "iou": iou(masks[0], truth),
                "predicted_iou": float(scores[0]),
                "set_image_ms": 1e3 * (encoded - started),
                "predict_ms": 1e3 * (finished - encoded),
                "mask": _pack(masks[0]),
            }
            append_row(sink, row)
    summary = summarise(read_rows(out_dir), loaded, config)
    atomic_write_bytes(out_dir / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def summarise(rows: list[dict], loaded: dict, config: dict) -> dict:
    backends = sorted({r["backend"] for r in rows})
    summary: dict = {"config": config, "backends": {}, "cases": {}}
    for name in backends:
        mine = [r for r in rows if r["backend"] == name]
        summary["backends"][name] = {
            "slices": len(mine),
            "mean_dice": float(np.mean([r["dice"] for r in mine])),
            "median_dice": float(np.median([r["dice"] for r in mine])),
            "median_set_image_ms": float(np.median([r["set_image_ms"] for r in mine])),
            "median_predict_ms": float(np.median([r["predict_ms"] for r in mine])),
        }
    for case_id, (_, truth, spacing) in loaded.items():
        entry: dict = {"spacing_mm": list(spacing)}
        for name in backends:
            stacked = np.zeros_like(truth)
            for r in rows:
                if r["case"] == case_id and r["backend"] == name:
                    stacked[r["slice"]] = _unpack(r["mask"], truth.shape[1:])
            entry[f"dice_3d_{name}"] = dice(stacked, truth)
        summary["cases"][case_id] = entry
    reference = config.get("reference")
    if reference in backends:
        summary["parity"] = _parity(rows, reference, loaded, backends)
    return summary


def _parity(rows: list[dict], reference: str, loaded: dict, backends: list[str]) -> dict:
    """Mask Dice of every backend against the reference on the same slices, and speed ratios."""
    by_key = {(r["case"], r["slice"], r["backend"]): r for r in rows}
    result = {}
    for name in backends:
        if name == reference:
            continue
        dices, deltas = [], []
        for (case_id, z, backend), row in by_key.items():
            ref = by_key.get((case_id, z, reference))
            if backend != name or ref is None:
                continue
            shape = loaded[case_id][1].shape[1:]
            dices.append(dice(_unpack(row["mask"], shape), _unpack(ref["mask"], shape)))
            deltas.append(abs(row["predicted_iou"] - ref["predicted_iou"]))
        ref_ms = np.median([r["set_image_ms"] for r in rows if r["backend"] == reference])
        own_ms = np.median([r["set_image_ms"] for r in rows if r["backend"] == name])
        result[name] = {
            "vs": reference,
            "slices": len(dices),
            "min_mask_dice": min(dices, default=None),
            "max_iou_delta": max(deltas, default=None),
            "set_image_speedup": float(ref_ms / own_ms) if own_ms else None,
        }
    return result
