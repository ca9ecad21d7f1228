"""Slice propagation: from one prompted slice, walk to the neighbours, each slice prompted with the
box of the previous slice's mask widened by a margin.

The rule (also in docs/segment-and-serve.md): going down and then up from the start slice, the next
slice's box is 0.8 × the previous slice's box + 0.2 × (bounding box of the previous slice's mask +
``margin_mm`` on every side, converted per axis, at least 1 pixel), clipped to the image and, if the
user gave a 3D box, to that box's footprint and slice range. The walk stops, and the new mask is
dropped, at the first slice whose mask
- has fewer than ``min_pixels`` pixels (the structure vanished),
- overlaps the previous mask by less than ``min_overlap`` of its own area (it stopped overlapping:
  the model found something else inside the box), or
- has a predicted IoU below ``min_score_ratio`` × the start slice's predicted IoU (and never below
  ``min_score``). The start slice is the one the user prompted, so its score is the model's
  confidence on this structure in this image; beyond the structure's end the blended box still
  yields a mask, but one the model scores clearly lower than that (on the demo cases 0.56-0.72
  past the end against 0.79-0.85 on the start slice). A fixed 0.6 let case 001's walk run five
  slices past the tumour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from samfast.eval.metrics import bounding_box

#: predict(z, box) -> (mask H×W bool, predicted IoU)
SlicePredict = Callable[[int, np.ndarray], tuple[np.ndarray, float]]


@dataclasses.dataclass(frozen=True)
class PropagationRule:
    margin_mm: float = 6.0
    #: Share of the previous box kept in the next one (0 = the mask box alone). The model's masks
    #: run a little inside the structure, so a box made only from them shrinks slice after slice.
    momentum: float = 0.8
    min_pixels: int = 10
    min_overlap: float = 0.5
    #: Stop below this share of the start slice's predicted IoU (relative: calibrated per volume) ...
    min_score_ratio: float = 0.8
    #: ... and never continue below this absolute predicted IoU.
    min_score: float = 0.6

    def score_floor(self, start_score: float | None) -> float:
        """The predicted IoU below which the walk stops, given the start slice's predicted IoU."""
        if start_score is None:
            return self.min_score
        return max(self.min_score, self.min_score_ratio * start_score)


@dataclasses.dataclass
class Walk:
    masks: dict[int, np.ndarray]
    scores: dict[int, float]
    stops: dict[str, str]  # "down"/"up" -> why the walk ended


def next_box(
    mask: np.ndarray,
    margin_px: tuple[float, float],
    limit: np.ndarray | None = None,
    previous_box: np.ndarray | None = None,
    momentum: float = 0.0,
) -> np.ndarray:
    """Box of ``mask`` widened by (x, y) margins, blended with ``previous_box`` by ``momentum``,
    clipped to the image and to ``limit`` (x0 y0 x1 y1)."""
    height, width = mask.shape
    mx, my = margin_px
    box = bounding_box(mask) + np.array([-mx, -my, mx, my], dtype=np.float32)
    if previous_box is not None and momentum > 0:
        box = momentum * np.asarray(previous_box, np.float32) + (1 - momentum) * box
    low = np.zeros(2) if limit is None else limit[:2]
    high = np.array([width - 1, height - 1]) if limit is None else limit[2:]
    box = np.concatenate([np.maximum(box[:2], low), np.minimum(box[2:], high)]).astype(np.float32)
    box[2:] = np.maximum(box[2:], box[:2] + 1)  # a one-pixel mask still gives a valid box
    return box


def _stop_reason(
    mask: np.ndarray, score: float, previous: np.ndarray, rule: PropagationRule, floor: float
) -> str | None:
    area = int(mask.sum())
    if area < rule.min_pixels:
        return f"mask vanished ({area} px)"
    overlap = int(np.logical_and(mask, previous).sum()) / area
    if overlap < rule.min_overlap:
        return f"stopped overlapping ({overlap:.2f} of the mask on the previous one)"
    if score < floor:
        return f"predicted IoU {score:.3f} below {floor:.3f}"
    return None


def propagate(
    predict: SlicePredict,
    start: int,
    start_mask: np.ndarray,
    start_box: np.ndarray | None,
    z_range: tuple[int, int],
    pixel_spacing: tuple[float, float],
    rule: PropagationRule = PropagationRule(),
    limit: np.ndarray | None = None,
    start_score: float | None = None,
) -> Walk:
    """Walk from ``start`` (whose mask and box are given) to z_range's ends; see the module doc.

    ``pixel_spacing`` is (row, column) mm; ``limit`` an optional x0 y0 x1 y1 no box may leave;
    ``start_score`` the start mask's predicted IoU (without it only ``rule.min_score`` applies).
    """
    floor = rule.score_floor(start_score)
    row_mm, col_mm = pixel_spacing
    margin = (max(1.0, rule.margin_mm / col_mm), max(1.0, rule.margin_mm / row_mm))
    walk = Walk({start: start_mask}, {}, {})
    for name, step, end in (("down", -1, z_range[0]), ("up", 1, z_range[1])):
        previous, box, z = start_mask, start_box, start + step
        walk.stops[name] = "reached the end of the range"
        if not previous.any():
            walk.stops[name] = "start mask is empty"
            continue
        while (z >= end) if step < 0 else (z <= end):
            box = next_box(previous, margin, limit, box, rule.momentum)
            mask, score = predict(z, box)
            reason = _stop_reason(mask, score, previous, rule, floor)
            if reason:
                walk.stops[name] = f"slice {z}: {reason}"
                break
            walk.masks[z], walk.scores[z] = mask, score
            previous, z = mask, z + step
    return walk
