"""summary.json from the rows of a run: the papers' aggregates, 3D metrics, parity and latency."""

from __future__ import annotations

import resource
import sys
from collections import defaultdict

import numpy as np
from scipy import stats

from samfast.eval.parity import RUN_PARITY, precision_gate
from samfast.eval.records import slice_key
from samfast.eval.settings import SELECTIONS

AREA_SPLIT_MM2 = 300.0  # Putz et al.: the threshold that best separates good from poor slices


def describe(values) -> dict:
    """mean, median and IQR of finite values, plus how many were left out as undefined (None/inf)."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], float)
    entry = {"n": int(finite.size), "undefined": len(values) - int(finite.size)}
    if finite.size:
        q1, median, q3 = np.percentile(finite, [25, 50, 75])
        entry.update(mean=float(finite.mean()), median=float(median), q1=float(q1), q3=float(q3))
    return entry


def _curve(slice_steps: list[list[dict]], key: str) -> list[float]:
    """Mean IoU after each step; a slice that stopped early (perfect mask) keeps its last value."""
    length = max(len(steps) for steps in slice_steps)
    padded = [[s[key] for s in steps] for steps in slice_steps]
    padded = [values + [values[-1]] * (length - len(values)) for values in padded]
    return [float(v) for v in np.mean(padded, axis=0)]


def _selections(rows: list[dict]) -> dict:
    return {
        name: {
            metric: describe([r["selections"][name][metric] for r in rows])
            for metric in ("iou", "dice", "nsd", "hd95", "points_at_best")
        }
        for name in SELECTIONS
    }


def _group(rows: list[dict]) -> dict:
    """Best IoU per selection for a subset of slices (a grade or an area bin)."""
    return {name: describe([r["selections"][name]["iou"] for r in rows]) for name in SELECTIONS}


def _protocol_plane(slices: list[dict], steps: dict[tuple, list[dict]]) -> dict:
    trajectories = [steps[slice_key(r)] for r in slices if slice_key(r) in steps]
    grades = sorted({r["grade"] for r in slices if r["grade"]})
    areas = [r["area_mm2"] for r in slices]
    best = [r["selections"]["oracle"]["iou"] for r in slices]
    entry = {
        "slices": len(slices),
        "selections": _selections(slices),
        "curves": {name: _curve(trajectories, f"{name}_iou") for name in SELECTIONS} if trajectories else {},
        "by_grade": {g: _group([r for r in slices if r["grade"] == g]) for g in grades},
        "by_area": {
            f"<{AREA_SPLIT_MM2:g} mm²": _group([r for r in slices if r["area_mm2"] < AREA_SPLIT_MM2]),
            f">={AREA_SPLIT_MM2:g} mm²": _group([r for r in slices if r["area_mm2"] >= AREA_SPLIT_MM2]),
        },
    }
    multimask = [s for steps_ in trajectories for s in steps_ if len(s["ious"]) > 1]
    if multimask:
        # How close Putz's proposed previous-slice selection comes to the oracle (no paper measured it).
        entry["previous_slice_vs_oracle"] = {
            "same_mask_as_oracle": float(np.mean([s["previous"] == s["oracle"] for s in multimask])),
            "same_mask_as_suggested": float(np.mean([s["suggested"] == s["oracle"] for s in multimask])),
            "mean_iou_gap": float(np.mean([s["oracle_iou"] - s["previous_iou"] for s in multimask])),
        }
    if len(set(areas)) > 2 and len(set(best)) > 1:
        rho, p = stats.spearmanr(areas, best)
        entry["spearman_best_iou_vs_area"] = {"rho": float(rho), "p": float(p), "n": len(best)}
    return entry


def _parity(slices: list[dict], steps: dict[tuple, list[dict]]) -> dict:
    """Primary vs compare backend on the same prompts: Δ mean IoU and per-slice mask Dice."""
    own, theirs, dices, deltas = [], [], [], []
    for row in slices:
        compare = row.get("compare")
        if compare is None or slice_key(row) not in steps:
            continue
        own.extend(s["ious"][s["chosen"]] for s in steps[slice_key(row)])
        theirs.extend(compare["chosen_ious"])
        dices.append(compare["min_mask_dice"])
        deltas.append(compare["max_iou_delta"])
    if not dices:
        return {}
    return {
        "backend": slices[0]["compare"]["backend"],
        "slices": len(dices),
        "mean_iou": float(np.mean(own)),
        "mean_iou_compare": float(np.mean(theirs)),
        "delta_mean_iou": float(abs(np.mean(own) - np.mean(theirs))),
        "min_mask_dice": float(min(dices)),
        RUN_PARITY.fraction_key: float(np.mean(np.array(dices) >= RUN_PARITY.mask_dice)),
        "max_iou_delta": float(max(deltas)),
    }


def _volumes(case_rows: list[dict]) -> dict:
    collected: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for row in case_rows:
        for protocol, planes in row["metrics_3d"].items():
            for plane, selections in planes.items():
                for name, metrics in selections.items():
                    for metric, value in metrics.items():
                        collected[protocol][plane][name][metric].append(value)
    return {
        protocol: {
            plane: {
                name: {metric: describe(values) for metric, values in metrics.items()}
                for name, metrics in selections.items()
            }
            for plane, selections in planes.items()
        }
        for protocol, planes in collected.items()
    }


def _latency(timings: list[dict]) -> dict:
    if not timings:
        return {}
    # None: the CUDA streaming path overlaps copies and compute, so it times no encoder call alone.
    encoder = [t["encoder_ms"] for t in timings if t.get("encoder_ms") is not None]
    calls = defaultdict(int)
    decoder_ms = defaultdict(float)
    for t in timings:
        for protocol, d in t["decoder"].items():
            calls[protocol] += d["calls"]
            decoder_ms[protocol] += d["ms"]
    total_s = (sum(encoder) + sum(decoder_ms.values())) / 1e3
    entry = {
        "slices": len(timings),
        "encoder_ms_per_slice": describe(encoder),
        "decoder_ms_per_call": {p: decoder_ms[p] / calls[p] for p in calls if calls[p]},
        "slices_per_s": len(timings) / total_s if total_s else None,
    }
    compare = [t["compare_encoder_ms"] for t in timings if "compare_encoder_ms" in t]
    if compare:
        entry["compare_encoder_ms_per_slice"] = describe(compare)
        entry["encoder_speedup_vs_compare"] = float(np.median(compare) / np.median(encoder))
    return entry


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def summarise(
    rows: list[dict],
    timings: list[dict],
    config: dict,
    wall_s: float | None = None,
    executor: dict | None = None,
) -> dict:
    """``executor``: where the cases ran (kept out of ``config``, which a resumed run must match)."""
    slices = [r for r in rows if r["row"] == "slice"]
    steps: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["row"] == "step":
            steps[slice_key(row)].append(row)
    skipped = [{"case": r["case"], "reason": r["reason"]} for r in rows if r["row"] == "skipped"]
    bad = {s["case"] for s in skipped}
    slices = [r for r in slices if r["case"] not in bad]
    cases = [r for r in rows if r["row"] == "case"]
    protocols: dict = {}
    parity: dict = {}
    for protocol in sorted({r["protocol"] for r in slices}):
        mine = [r for r in slices if r["protocol"] == protocol]
        for plane in sorted({r["plane"] for r in mine}):
            subset = [r for r in mine if r["plane"] == plane]
            protocols.setdefault(protocol, {})[plane] = _protocol_plane(subset, steps)
        parity[protocol] = _parity(mine, steps)
    gated = {
        p: [r["compare"]["gate"] for r in slices if r["protocol"] == p and "gate" in r.get("compare", {})]
        for p in parity
    }
    latency = _latency(timings)
    latency["peak_rss_mb"] = peak_rss_mb()
    if wall_s is not None:
        latency["wall_s"] = wall_s
    return {
        "config": config,
        "cases": {
            "evaluated": len(cases),
            "without_target_slices": sorted(r["case"] for r in cases if r["slices"] == 0),
            "skipped": skipped,
        },
        "protocols": protocols,
        "volumes": _volumes(cases),
        "parity": {p: v for p, v in parity.items() if v},
        "precision_gate": precision_gate({p: g for p, g in gated.items() if g})
        if any(gated.values())
        else {},
        "latency": latency,
        **({"executor": executor} if executor else {}),
    }
