"""Slice propagation: from a prompted slice, walk to the neighbours, each slice prompted with a box
made from the previous slice's mask.

The rule (``PropagationRule``; docs/clinical.md, "3D from one prompt", gives the figures):
- the next slice's box is ``momentum`` × the previous slice's box + (1 − ``momentum``) × (bounding box
  of the previous slice's mask + ``margin_mm`` on every side, converted per axis, at least 1 pixel).
  The model's masks run a little inside the structure, so a box made from the mask alone shrinks
  slice after slice and loses the structure (the challenge baseline's +3 px rule: 0.57 3D Dice on
  demo case 002); the previous box's share keeps the walk's extent, the mask's share follows the
  structure's drift.
- Inside a 3D box the walk is bounded: every box is clipped to the box's footprint shrunk toward the
  box's first and last slice by ``shape_prior`` (1 = the ellipse section of the ellipsoid inscribed
  in the box, 0 = the plain footprint; a box's corners are usually empty), and every mask is clipped
  to the footprint. The walk runs to the box's ends: the user said the structure spans them.
- Without a 3D box (a prompt on one slice, clicks), the walk stops, and the new mask is dropped, at
  the first slice whose mask
  - has fewer than ``min_pixels`` pixels (the structure vanished),
  - overlaps the previous mask by less than ``min_overlap`` of its own area (the model found
    something else inside the box), or
  - has a predicted IoU below ``min_score_ratio`` × the start slice's predicted IoU (and never below
    ``min_score``): beyond the structure's end the blended box still yields a mask, but one the model
    scores clearly lower (on the demo cases 0.56-0.72 past the end against 0.79-0.85 on the start
    slice).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from samfast.errors import InputError
from samfast.eval.metrics import bounding_box

#: predict(z, box) -> (mask H×W bool, predicted IoU)
SlicePredict = Callable[[int, np.ndarray], tuple[np.ndarray, float]]
#: agrees(z, mask) -> True when the new mask of slice z matches what that slice had (an edit's stop)
Agreement = Callable[[int, np.ndarray], bool]


@dataclasses.dataclass(frozen=True)
class PropagationRule:
    #: Recorded in every sidecar and summary: which rule made the masks.
    name: str = "samfast-walk-2"
    margin_mm: float = 5.0
    #: Share of the previous box kept in the next one (0 = the mask's box alone).
    momentum: float = 0.7
    #: Inside a 3D box: 1 = boxes within the inscribed ellipsoid's section, 0 = the whole footprint.
    shape_prior: float = 1.0
    min_pixels: int = 10
    min_overlap: float = 0.5
    #: Stop below this share of the start slice's predicted IoU (relative: calibrated per volume) ...
    min_score_ratio: float = 0.8
    #: ... and never continue below this absolute predicted IoU.
    min_score: float = 0.6

    def __post_init__(self) -> None:
        if not (self.margin_mm >= 0 and 0 <= self.momentum < 1 and 0 <= self.shape_prior <= 1):
            raise InputError("walk rule: need margin_mm >= 0, 0 <= momentum < 1 and 0 <= shape_prior <= 1")
        if self.min_pixels < 1 or not 0 <= self.min_overlap <= 1:
            raise InputError("walk rule: need min_pixels >= 1 and 0 <= min_overlap <= 1")

    def score_floor(self, start_score: float | None) -> float:
        """The predicted IoU below which the walk stops, given the start slice's predicted IoU."""
        if start_score is None:
            return self.min_score
        return max(self.min_score, self.min_score_ratio * start_score)

    def margin_px(self, pixel_spacing: tuple[float, float]) -> tuple[float, float]:
        """(x, y) margin in pixels for (row, column) spacing in mm."""
        row_mm, col_mm = pixel_spacing
        return max(1.0, self.margin_mm / col_mm), max(1.0, self.margin_mm / row_mm)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """A user's 3D box: its in-plane footprint x0 y0 x1 y1 and slice range z0..z1."""

    footprint: np.ndarray
    z_range: tuple[int, int]

    @property
    def middle(self) -> int:
        z0, z1 = self.z_range
        return z0 + (z1 - z0) // 2

    def limit(self, z: int, rule: PropagationRule, margin_px: tuple[float, float]) -> np.ndarray:
        """The box slice ``z`` may use: the footprint, shrunk toward the range's ends by the
        rule's shape prior (the margin added back, so a small end section keeps its context)."""
        z0, z1 = self.z_range
        half_depth = (z1 - z0) / 2 + 0.5
        t = min(1.0, abs(z - (z0 + z1) / 2) / half_depth)
        scale = 1.0 - rule.shape_prior * (1.0 - np.sqrt(1.0 - t * t))
        centre = (self.footprint[:2] + self.footprint[2:]) / 2
        half = (self.footprint[2:] - self.footprint[:2]) / 2 * scale + np.asarray(margin_px)
        return clip_box(np.concatenate([centre - half, centre + half]), self.footprint)

    def clip_mask(self, mask: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in self.footprint)
        inside = np.zeros_like(mask, dtype=bool)
        inside[max(0, y0) : y1 + 1, max(0, x0) : x1 + 1] = True
        return np.logical_and(mask, inside)


@dataclasses.dataclass
class Walk:
    masks: dict[int, np.ndarray]
    scores: dict[int, float]
    boxes: dict[int, np.ndarray]
    stops: dict[str, str]  # "down"/"up" -> why the walk ended


def clip_box(box: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """``box`` (x0 y0 x1 y1) inside ``limit``, at least one pixel wide and high."""
    box = np.concatenate([np.maximum(box[:2], limit[:2]), np.minimum(box[2:], limit[2:])])
    box = box.astype(np.float32)
    box[2:] = np.maximum(box[2:], box[:2] + 1)  # a one-pixel mask still gives a valid box
    return box


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
    image = np.array([0, 0, width - 1, height - 1], np.float32)
    return clip_box(box, image if limit is None else clip_box(np.asarray(limit, np.float32), image))


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


@dataclasses.dataclass
class Walker:
    """The model and the rule a walk uses; ``bounds`` when a 3D box holds it (no stop rule then,
    boxes and masks clipped to the box)."""

    predict: SlicePredict
    rule: PropagationRule
    margin_px: tuple[float, float]
    bounds: Bounds | None = None
    #: on_step(z, mask, predicted IoU, box): each slice the walk keeps, as it keeps it
    on_step: Callable[[int, np.ndarray, float, np.ndarray], None] = lambda z, mask, score, box: None

    def one_way(
        self,
        walk: Walk,
        name: str,
        start: int,
        end: int,
        limit: np.ndarray | None = None,
        floor: float | None = None,
        agrees: Agreement | None = None,
        old_boxes: dict[int, np.ndarray] | None = None,
    ) -> None:
        """Walk from ``start`` (its mask and box already in ``walk``) toward ``end`` (included).

        ``limit``: a box no slice's box may leave; ``floor``: the stop rule's predicted-IoU floor
        (default ``rule.min_score``); ``agrees``: an edit's walk ends after two slices in a row
        whose new masks agree with their old ones. ``old_boxes``: an edit's walk blends each
        slice's box from that slice's old box rather than the box carried along, so a change
        fades by (1 − momentum) a slice and the walk meets the old result within a few slices.
        """
        rule, bounds = self.rule, self.bounds
        step = 1 if end >= start else -1
        previous, box, z, agreed = walk.masks[start], walk.boxes.get(start), start + step, 0
        walk.stops[name] = f"reached slice {end}"
        if not previous.any() and bounds is None:
            walk.stops[name] = "start mask is empty"
            return
        while (z - end) * step <= 0:
            slice_limit = limit if bounds is None else bounds.limit(z, rule, self.margin_px)
            if old_boxes is not None and z in old_boxes:
                box = np.asarray(old_boxes[z], np.float32)
            if previous.any():
                box = next_box(previous, self.margin_px, slice_limit, box, rule.momentum)
            # an empty mask inside a 3D box: the previous box again (the structure may be faint)
            mask, score = self.predict(z, box)
            if bounds is not None:
                mask = bounds.clip_mask(mask)
            else:
                reason = _stop_reason(mask, score, previous, rule, rule.min_score if floor is None else floor)
                if reason:
                    walk.stops[name] = f"slice {z}: {reason}"
                    return
            walk.masks[z], walk.scores[z], walk.boxes[z] = mask, score, box
            self.on_step(z, mask, score, box)
            agreed = agreed + 1 if agrees is not None and agrees(z, mask) else 0
            if agreed >= 2:
                walk.stops[name] = f"slice {z}: agrees with the previous result on two slices in a row"
                return
            previous, z = mask, z + step


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
    """Walk from ``start`` (whose mask and box are given) down and up to z_range's ends with the
    stop rule; see the module doc.

    ``pixel_spacing`` is (row, column) mm; ``limit`` an optional x0 y0 x1 y1 no box may leave;
    ``start_score`` the start mask's predicted IoU (without it only ``rule.min_score`` applies).
    """
    walker = Walker(predict, rule, rule.margin_px(pixel_spacing))
    walk = Walk({start: start_mask}, {}, {}, {})
    if start_box is not None:
        walk.boxes[start] = np.asarray(start_box, np.float32)
    for name, end in (("down", z_range[0]), ("up", z_range[1])):
        walker.one_way(walk, name, start, end, limit, rule.score_floor(start_score))
    return walk
