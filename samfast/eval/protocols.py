"""Prompt protocols on one slice: points (Putz, Mazurowski), box, box + correction clicks.

Each takes a Predictor whose image is already set and the slice's GT mask, and returns one plain,
JSON-serialisable dict per model call, so a benchmark can store the whole trajectory. Pass a list as
``masks_out`` to also receive every call's masks (C, H, W) — for mask selection, metrics and parity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from samfast.eval.metrics import bounding_box, iou
from samfast.eval.prompts import (
    Point,
    mazurowski_first_point,
    mazurowski_next_point,
    putz_first_point,
    putz_next_point,
)

Step = dict[str, Any]


def _predict(
    predictor,
    gt: np.ndarray,
    points: list[Point],
    box: np.ndarray | None,
    mask_input: np.ndarray | None,
    multimask_output: bool,
) -> tuple[Step, np.ndarray, np.ndarray]:
    """One model call -> (record, masks (C, H, W), low-res logits (C, L, L))."""
    coords = labels = None
    if points:
        coords = np.array([p[:2] for p in points], np.float32)
        labels = np.array([p[2] for p in points], np.float32)
    masks, scores, low_res = predictor.predict(
        point_coords=coords,
        point_labels=labels,
        box=box,
        mask_input=mask_input,
        multimask_output=multimask_output,
    )
    ious = [iou(mask, gt) for mask in masks]
    oracle, suggested = int(np.argmax(ious)), int(np.argmax(scores))
    record: Step = {
        "points": [[int(v) for v in p] for p in points],
        "box": None if box is None else [float(v) for v in box],
        "mask_input": mask_input is not None,
        "ious": [float(v) for v in ious],
        # Rounded: the last bits of a float32 score are not worth storing (or diffing).
        "predicted_ious": [round(float(v), 6) for v in scores],
        "oracle": oracle,
        "suggested": suggested,
        "oracle_iou": float(ious[oracle]),
        "suggested_iou": float(ious[suggested]),
    }
    return record, masks, low_res


def _iterate(
    predictor,
    gt: np.ndarray,
    first: list[Point],
    next_point,
    steps: int,
    box: np.ndarray | None = None,
    follow: str = "oracle",
    feed_logits: bool = False,
    masks_out: list | None = None,
) -> list[Step]:
    """Shared loop: predict, pick the followed mask, ask ``next_point`` for a click, repeat.

    Stops early when the followed mask equals the GT (no error left to click on).
    """
    if follow not in ("oracle", "suggested"):
        raise ValueError(f"follow must be 'oracle' or 'suggested', got {follow!r}")
    gt = np.asarray(gt, bool)
    points, mask_input, records = list(first), None, []
    for _ in range(steps):
        record, masks, low_res = _predict(predictor, gt, points, box, mask_input, True)
        record["step"] = len(records) + 1
        records.append(record)
        if masks_out is not None:
            masks_out.append(masks)
        chosen = record["chosen"] = record[follow]
        if feed_logits:
            mask_input = low_res[chosen][None]
        if len(records) == steps:
            break
        point = next_point(gt, masks[chosen])
        if point is None:
            break
        points.append(point)
    return records


def run_points_putz(
    predictor,
    gt: np.ndarray,
    max_points: int = 9,
    feed_logits: bool = False,
    follow: str = "oracle",
    masks_out: list | None = None,
) -> list[Step]:
    """Putz et al.: first point at the GT centre, then up to ``max_points`` in all, 3 masks each.

    The paper places each next point from "the mask prediction" without saying which of the three;
    it reports the oracle mask as its main result (the expert keeps the best mask), so by default
    the next point is computed from the previous step's oracle mask. ``follow="suggested"`` uses
    the highest predicted IoU instead. Putz fed no mask prompts (their Discussion); ``feed_logits``
    passes the followed mask's low-res logits back as ``mask_input``, as SAM's own interactive loop.
    """
    gt = np.asarray(gt, bool)
    first = [putz_first_point(gt)]
    return _iterate(predictor, gt, first, putz_next_point, max_points, None, follow, feed_logits, masks_out)


def run_points_mazurowski(
    predictor, gt: np.ndarray, rng: np.random.Generator, max_points: int = 9, masks_out: list | None = None
) -> list[Step]:
    """Mazurowski et al. Algorithm 1: error-region centres, random ties, highest-confidence mask.

    "We always use the mask with highest confidence" (their Section 2), so the error region comes
    from the suggested mask. Every call gets all points placed so far.
    """
    gt = np.asarray(gt, bool)
    first = [mazurowski_first_point(gt, rng)]

    def next_point(truth: np.ndarray, pred: np.ndarray) -> Point | None:
        return mazurowski_next_point(truth, pred, rng)

    return _iterate(predictor, gt, first, next_point, max_points, follow="suggested", masks_out=masks_out)


def run_box(
    predictor,
    gt: np.ndarray,
    box: np.ndarray,
    multimask_output: bool = False,
    masks_out: list | None = None,
) -> list[Step]:
    """One box prompt. Single-mask output by default, as MedSAM-style models are trained."""
    record, masks, _ = _predict(
        predictor, np.asarray(gt, bool), [], np.asarray(box, np.float32), None, multimask_output
    )
    record["step"], record["chosen"] = 1, record["suggested"]
    if masks_out is not None:
        masks_out.append(masks)
    return [record]


def component_boxes(gt: np.ndarray) -> list[np.ndarray]:
    """Tight box of every 8-connected component of a 2D mask, largest first."""
    labelled, count = ndimage.label(np.asarray(gt, bool), structure=np.ones((3, 3), int))
    parts = [labelled == k for k in range(1, count + 1)]
    parts.sort(key=lambda part: -int(part.sum()))
    return [bounding_box(part) for part in parts]


def run_box_components(predictor, gt: np.ndarray, masks_out: list | None = None) -> list[Step]:
    """One box per connected component in one batched call; the slice's mask is their union."""
    gt = np.asarray(gt, bool)
    boxes = np.stack(component_boxes(gt))
    masks, scores, _ = predictor.predict_batch(boxes=boxes, multimask_output=False)
    union = masks[:, 0].any(axis=0)[None]
    value = iou(union[0], gt)
    record: Step = {
        "points": [],
        "box": [[float(v) for v in box] for box in boxes],
        "mask_input": False,
        "ious": [value],
        "predicted_ious": [round(float(scores[:, 0].min()), 6)],
        "oracle": 0,
        "suggested": 0,
        "oracle_iou": value,
        "suggested_iou": value,
        "step": 1,
        "chosen": 0,
    }
    if masks_out is not None:
        masks_out.append(union)
    return [record]


def run_box_points(
    predictor,
    gt: np.ndarray,
    box: np.ndarray,
    max_clicks: int = 5,
    follow: str = "oracle",
    masks_out: list | None = None,
) -> list[Step]:
    """A box, then up to ``max_clicks`` Putz-rule correction clicks alongside it (1 + clicks calls).

    The first record is the box alone; the clicks are placed on the followed (oracle) mask's error.
    """
    box = np.asarray(box, np.float32)
    return _iterate(predictor, gt, [], putz_next_point, max_clicks + 1, box, follow, masks_out=masks_out)


def replay(
    predictor, gt: np.ndarray, steps: list[Step], feed_logits: bool = False, masks_out: list | None = None
) -> list[Step]:
    """The same prompts, step by step, on another predictor (parity runs: "same prompts" exactly).

    Mask feedback, when on, comes from this predictor's own previous logits, of the mask the original
    run followed at that step.
    """
    gt = np.asarray(gt, bool)
    records, mask_input = [], None
    for original in steps:
        points = [tuple(p) for p in original["points"]]
        box = None if original["box"] is None else np.asarray(original["box"], np.float32)
        multimask = len(original["ious"]) > 1
        if box is not None and box.ndim == 2:  # one box per component: replay as one batch
            masks, _, _ = predictor.predict_batch(boxes=box, multimask_output=False)
            union = masks[:, 0].any(axis=0)[None]
            record = {**original, "ious": [iou(union[0], gt)]}
            masks, low_res = union, None
        else:
            record, masks, low_res = _predict(predictor, gt, points, box, mask_input, multimask)
            record["step"], record["chosen"] = original["step"], original["chosen"]
        records.append(record)
        if masks_out is not None:
            masks_out.append(masks)
        if feed_logits and low_res is not None:
            mask_input = low_res[original["chosen"]][None]
    return records
