"""`samfast bench brats --protocol volume`: a volume from its target's 3D box, four ways, side by side.

Per case, from the ground truth's 3D bounding box:
- ``3d``: samfast's 3D mode (samfast.clinical.segment, the walk with its rule);
- ``same-box``: the box's footprint on every slice of its range (``samfast segment --per-slice``);
- ``baseline``: the rule the MedSAM-on-laptop challenge (CVPR 2024) shipped with LiteMedSAM: the
  middle slice gets the footprint, each next slice walking up and down the bounding box of the
  previous slice's mask + 3 px (the footprint again after an empty mask), no stop rule;
- ``tight``: every target slice its own tight box from the ground truth, roughly the most a
  propagation of boxes can reach.
Reports 3D Dice, NSD, HD95 and the mask's voxels over the target's. Every mode decodes from one
embedding per slice (the shared cache), so the modes differ only in their prompts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from samfast.clinical.prompts import SlicePrompt, VolumePrompts
from samfast.clinical.segment import segment_volume
from samfast.clinical.slice_model import SliceModel
from samfast.eval.metrics import bounding_box, dice, hd95, nsd

MODES = ("3d", "same-box", "baseline", "tight")
#: The challenge baseline's margin around the previous slice's mask, in pixels.
BASELINE_SHIFT_PX = 3.0


def target_box(truth: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(footprint x0 y0 x1 y1, z0, z1): the 3D bounding box of a (z, y, x) mask."""
    zs = np.flatnonzero(truth.any(axis=(1, 2)))
    return bounding_box(truth.any(axis=0)), int(zs[0]), int(zs[-1])


def _box(footprint: np.ndarray) -> np.ndarray:
    box = np.asarray(footprint, np.float32).copy()
    box[2:] = np.maximum(box[2:], box[:2] + 1)  # a one-pixel target still gives a valid box
    return box


def challenge_baseline(model: SliceModel, footprint: np.ndarray, z0: int, z1: int) -> np.ndarray:
    """The challenge's rule (module doc) on ``model``'s volume."""
    mask = np.zeros(model.volume_input.shape, bool)
    height, width = mask.shape[1:]
    middle = z0 + (z1 - z0) // 2
    shift = np.array([-1, -1, 1, 1], np.float32) * BASELINE_SHIFT_PX
    for order, neighbour in ((range(middle, z1 + 1), -1), (range(middle - 1, z0 - 1, -1), 1)):
        for z in order:
            previous = mask[z + neighbour] if z != middle else np.zeros((height, width), bool)
            if previous.any():
                box = np.clip(bounding_box(previous) + shift, 0, [width - 1, height - 1] * 2)
            else:
                box = footprint
            mask[z] = model.predict(z, SlicePrompt(box=_box(box)))[0]
    return mask


def run_mode(mode: str, model: SliceModel, truth: np.ndarray, spacing_zyx) -> np.ndarray:
    footprint, z0, z1 = target_box(truth)
    box = _box(footprint)
    prompts = VolumePrompts({z: SlicePrompt(box=box) for z in range(z0, z1 + 1)}, (z0, z1), (box, z0, z1))
    pixel = (float(spacing_zyx[1]), float(spacing_zyx[2]))
    if mode == "3d":
        return segment_volume(model, prompts, pixel, "3d").mask
    if mode == "same-box":
        return segment_volume(model, prompts, pixel, "per-slice").mask
    if mode == "baseline":
        return challenge_baseline(model, footprint, z0, z1)
    mask = np.zeros(truth.shape, bool)
    for z in range(z0, z1 + 1):
        if truth[z].any():
            mask[z] = model.predict(z, SlicePrompt(box=_box(bounding_box(truth[z]))))[0]
    return mask


def score(mask: np.ndarray, truth: np.ndarray, spacing_zyx, tolerance_mm: float) -> dict:
    return {
        "dice": round(dice(mask, truth), 4),
        "nsd": round(nsd(mask, truth, spacing_zyx, tolerance_mm), 4),
        "hd95_mm": round(hd95(mask, truth, spacing_zyx), 2),
        "voxel_ratio": round(float(mask.sum()) / float(truth.sum()), 3),
    }


def bench_case(model: SliceModel, truth: np.ndarray, spacing_zyx, tolerance_mm: float = 1.0) -> dict:
    """One case, every mode: {mode: metrics and seconds}. The embeddings are encoded once first."""
    _, z0, z1 = target_box(truth)
    model.prefetch(range(z0, z1 + 1))
    row = {"slices": z1 - z0 + 1}
    for mode in MODES:
        started = time.perf_counter()
        mask = run_mode(mode, model, truth, spacing_zyx)
        row[mode] = {
            **score(mask, truth, spacing_zyx, tolerance_mm),
            "s": round(time.perf_counter() - started, 2),
        }
    return row


def goals(rows: dict[str, dict]) -> dict:
    """The 3D mode against the baseline and the tight boxes, on the mean over the cases."""
    mean = {m: float(np.mean([r[m]["dice"] for r in rows.values()])) for m in MODES}
    gap = mean["tight"] - mean["baseline"]
    return {
        "mean_dice": {m: round(v, 4) for m, v in mean.items()},
        "gain_over_baseline": round(mean["3d"] - mean["baseline"], 4),
        "gap_closed": round((mean["3d"] - mean["baseline"]) / gap, 3) if gap > 0 else None,
        "worst_vs_baseline": round(min(r["3d"]["dice"] - r["baseline"]["dice"] for r in rows.values()), 4),
        "mean_voxel_ratio": round(float(np.mean([r["3d"]["voxel_ratio"] for r in rows.values()])), 3),
    }


def run_volume_bench(
    cases: list,
    predictor,
    out: Path,
    normalization: str,
    target: str,
    tolerance_mm: float,
    progress: Callable[[str], None] = lambda case: None,
) -> dict:
    """Every case, resumable (``out``/volume.jsonl keeps finished cases); writes volume.json."""
    from samfast.eval.datasets import load_case
    from samfast.io.atomic import atomic_write_bytes
    from samfast.preprocess import normalize
    from samfast.runtime.embedding_cache import EmbeddingCache

    rows_path = out / "volume.jsonl"
    rows = {}
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["case"]] = row
    # the 3D walk and its baselines share one embedding per slice; the caller's predictor is left alone
    predictor = predictor.with_cache(EmbeddingCache())
    for case in cases:
        if case.case_id in rows:
            continue
        progress(case.case_id)
        volume, truth, spacing_xyz = load_case(case, target)
        spacing_zyx = tuple(float(v) for v in spacing_xyz[::-1])
        model = SliceModel(predictor, normalize(volume, normalization))
        row = {"case": case.case_id, **bench_case(model, truth, spacing_zyx, tolerance_mm)}
        predictor.cache.clear()
        with open(rows_path, "a") as sink:
            sink.write(json.dumps(row) + "\n")
        rows[case.case_id] = row
    summary = {"protocol": "volume", "target": target, "cases": rows, "goals": goals(rows) if rows else None}
    atomic_write_bytes(out / "volume.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary
