"""Segment a volume from its prompts: the 3D mode (a walk from one or more prompted slices) or each
prompted slice on its own; and an edit that re-walks from a corrected slice.

The library API behind `samfast segment` and the service; pure apart from the model calls (no files).

Anchors. With a 3D box (more than one slice), the walk starts from the box's middle slice, prompted
with the box's footprint, or from each slice that also has clicks, and runs inside the box to its
ends. Without one, every prompted slice (a 2D box and/or clicks) is an anchor. Between two anchors
each walks half the way, its boxes kept within the union of both anchors' boxes; beyond the outer
anchors the walk runs until the stop rule ends it (samfast.clinical.propagate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from samfast.clinical.prompts import SlicePrompt, VolumePrompts
from samfast.clinical.propagate import Bounds, PropagationRule, Walk, Walker
from samfast.clinical.slice_model import SliceModel
from samfast.errors import InputError
from samfast.eval.metrics import bounding_box, dice

MODES = ("3d", "per-slice")
#: An edit's walk ends where its masks agree with the previous result this well, two slices in a row.
EDIT_AGREEMENT = 0.98
#: A walk without a known end encodes this many slices ahead in one streamer run.
PREFETCH = 8


@dataclasses.dataclass
class VolumeSegmentation:
    mask: np.ndarray  # (z, y, x) bool
    scores: dict[int, float]  # predicted IoU per segmented slice
    boxes: dict[int, list[float]] = dataclasses.field(default_factory=dict)  # the box each slice got
    anchors: list[int] = dataclasses.field(default_factory=list)  # 3D mode: the prompted slices
    stops: dict[str, str] | None = None  # 3D mode: why each outer direction ended
    rule: PropagationRule | None = None
    bounds: Bounds | None = None

    @property
    def start_slice(self) -> int | None:
        return self.anchors[0] if self.anchors else None

    def summary(self) -> dict:
        """What a sidecar or a service response records about how the masks were made."""
        return {
            "mode": "per-slice" if self.rule is None else "3d",
            "rule": None if self.rule is None else dataclasses.asdict(self.rule),
            "anchors": self.anchors,
            "stops": self.stops,
            "slices": {
                str(z): {"box": self.boxes.get(z), "predicted_iou": round(s, 6)}
                for z, s in sorted(self.scores.items())
            },
        }


def _bounds(prompts: VolumePrompts) -> Bounds | None:
    box = prompts.box3d
    if box is None or box[2] <= box[1]:
        return None
    return Bounds(np.asarray(box[0], np.float32), (box[1], box[2]))


def anchor_prompts(prompts: VolumePrompts, bounds: Bounds | None) -> dict[int, SlicePrompt]:
    """The slices a walk starts from, each with its prompt."""
    if bounds is None:
        return dict(prompts.slices)
    clicked = {z: p for z, p in prompts.slices.items() if p.points is not None}
    if not clicked:
        return {bounds.middle: SlicePrompt(box=bounds.footprint)}
    return clicked  # each click slice also carries the footprint (build_prompts)


def _model_walker(model: SliceModel, on_slice: Callable[[int], None], prefetch: bool = True):
    last = [None]

    def predict(z: int, box: np.ndarray) -> tuple[np.ndarray, float]:
        if prefetch and not model.is_cached(z):  # a walk without a known end: encode ahead
            step = 1 if last[0] is None or z > last[0] else -1
            ahead = [z + step * k for k in range(PREFETCH)]
            model.prefetch([a for a in ahead if 0 <= a < model.volume_input.shape[0]])
        last[0] = z
        found, score, _, _ = model.predict(z, SlicePrompt(box=box))
        on_slice(z)
        return found, score

    return predict


def _prompt_box(prompt: SlicePrompt, mask: np.ndarray) -> np.ndarray | None:
    if prompt.box is not None:
        return np.asarray(prompt.box, np.float32)
    return bounding_box(mask) if mask.any() else None


def segment_volume(
    model: SliceModel,
    prompts: VolumePrompts,
    pixel_spacing: tuple[float, float],
    mode: str = "3d",
    rule: PropagationRule | None = None,
    on_slice: Callable[[int], None] = lambda z: None,
    on_step: Callable[[int, np.ndarray, float, np.ndarray | None], None] = lambda z, mask, score, box: None,
    prefetch: bool = True,
) -> VolumeSegmentation:
    """Masks for a volume: the 3D mode's walk, or (``per-slice``) every prompted slice on its own.

    ``pixel_spacing`` is (row, column) mm, used for the walk's margin. ``on_slice(z)`` follows
    every model call, ``on_step(z, mask, score, box)`` every slice kept, as it is kept (either may
    raise to stop the walk). ``prefetch``: encode a 3D box's slices ahead in batches first (a
    batch run); a caller that streams slices as they come leaves it off, so the first slice is
    not held back by the encoding of the rest.
    """
    if mode not in MODES:
        raise InputError(f"unknown segmentation mode {mode!r}; use {' or '.join(MODES)}")
    depth = model.volume_input.shape[0]
    mask = np.zeros(model.volume_input.shape, dtype=bool)
    if mode == "per-slice":
        if prefetch:
            model.prefetch(sorted(prompts.slices))
        scores, boxes = {}, {}
        for z, prompt in sorted(prompts.slices.items()):
            mask[z], scores[z], _, _ = model.predict(z, prompt)
            boxes[z] = None if prompt.box is None else [float(v) for v in prompt.box]
            on_slice(z)
            on_step(z, mask[z], scores[z], prompt.box)
        return VolumeSegmentation(mask, scores, boxes)

    rule = rule or PropagationRule()
    bounds = _bounds(prompts)
    anchors = anchor_prompts(prompts, bounds)
    order = sorted(anchors)
    low, high = bounds.z_range if bounds else (0, depth - 1)
    if prefetch:
        model.prefetch(order + [z for z in range(low, high + 1) if z not in anchors] if bounds else order)
    margin = rule.margin_px(pixel_spacing)
    walker = Walker(_model_walker(model, on_slice, prefetch), rule, margin, bounds, on_step)
    walk = Walk({}, {}, {}, {})
    start_boxes: dict[int, np.ndarray | None] = {}
    for z in order:
        found, score, _, _ = model.predict(z, anchors[z])
        on_slice(z)
        walk.masks[z] = found if bounds is None else bounds.clip_mask(found)
        walk.scores[z] = score
        start_boxes[z] = _prompt_box(anchors[z], walk.masks[z])
        if start_boxes[z] is not None:
            walk.boxes[z] = start_boxes[z]
        on_step(z, walk.masks[z], score, start_boxes[z])
    # between anchors: each walks half the gap, boxes within both anchors' boxes
    for a, b in zip(order, order[1:], strict=False):
        both = [box for box in (start_boxes[a], start_boxes[b]) if box is not None]
        union = None
        if both:
            stacked = np.stack(both)
            union = np.concatenate([stacked[:, :2].min(0), stacked[:, 2:].max(0)])
            union = union + np.array([-margin[0], -margin[1], margin[0], margin[1]], np.float32)
        middle = a + (b - a) // 2
        for start, end, name in ((a, middle, f"{a}-up"), (b, middle + 1, f"{b}-down")):
            if start != end:
                walker.one_way(walk, name, start, end, limit=union)
    floor = rule.score_floor(walk.scores[order[0]]) if len(order) == 1 else rule.min_score
    outer = {"down": (order[0], low), "up": (order[-1], high)}
    stops = {}
    for name, (start, end) in outer.items():
        if start == end:
            stops[name] = f"reached slice {end}"
            continue
        walker.one_way(walk, name, start, end, floor=floor)
        stops[name] = walk.stops[name]
    for z, found in walk.masks.items():
        mask[z] = found
    boxes = {z: [float(v) for v in box] for z, box in walk.boxes.items()}
    return VolumeSegmentation(mask, dict(walk.scores), boxes, order, stops, rule, bounds)


def edit_volume(
    model: SliceModel,
    previous: VolumeSegmentation,
    z: int,
    prompt: SlicePrompt,
    pixel_spacing: tuple[float, float],
    on_slice: Callable[[int], None] = lambda z: None,
    on_step: Callable[[int, np.ndarray, float, np.ndarray | None], None] = lambda z, mask, score, box: None,
) -> tuple[VolumeSegmentation, list[int]]:
    """Correct slice ``z`` with a new prompt and re-walk outward from it until the new masks agree
    with ``previous`` (Dice >= EDIT_AGREEMENT on two slices in a row). Returns the new segmentation
    and the slices that were run again; ``previous`` is not changed."""
    depth = model.volume_input.shape[0]
    if not 0 <= z < depth:
        raise InputError(f"slice {z} lies outside the volume's {depth} slices")
    rule = previous.rule or PropagationRule()
    bounds = previous.bounds
    mask = previous.mask.copy()
    scores, boxes = dict(previous.scores), dict(previous.boxes)
    found, score, _, _ = model.predict(z, prompt)
    on_slice(z)
    if bounds is not None:
        found = bounds.clip_mask(found)
    mask[z], scores[z] = found, score
    start_box = _prompt_box(prompt, found)
    boxes[z] = None if start_box is None else [float(v) for v in start_box]
    low, high = bounds.z_range if bounds else (0, depth - 1)

    def agrees(zz: int, new: np.ndarray) -> bool:
        return dice(new, previous.mask[zz]) >= EDIT_AGREEMENT

    on_step(z, found, score, start_box)
    walker = Walker(
        _model_walker(model, on_slice, False), rule, rule.margin_px(pixel_spacing), bounds, on_step
    )
    rerun, stops = [z], dict(previous.stops or {})
    for name, end in (("down", low), ("up", high)):
        if end == z:
            continue
        walk = Walk({z: found}, {z: score}, {} if start_box is None else {z: start_box}, {})
        old_boxes = {k: np.asarray(v, np.float32) for k, v in previous.boxes.items() if v is not None}
        walker.one_way(walk, name, z, end, floor=rule.score_floor(score), agrees=agrees, old_boxes=old_boxes)
        del walk.masks[z], walk.scores[z]
        walk.boxes.pop(z, None)
        stops[f"edit-{name}"] = walk.stops[name]
        step = 1 if end > z else -1
        if "agrees" not in walk.stops[name]:
            # the walk ended before meeting the old result: what lay beyond it is not this structure
            for beyond in range(z + step * (len(walk.masks) + 1), end + step, step):
                mask[beyond] = False
                scores.pop(beyond, None)
                boxes.pop(beyond, None)
        for zz, new in walk.masks.items():
            mask[zz], scores[zz], boxes[zz] = new, walk.scores[zz], [float(v) for v in walk.boxes[zz]]
        rerun += sorted(walk.masks)
    rerun = sorted(rerun)
    anchors = sorted({*previous.anchors, z})
    return VolumeSegmentation(mask, scores, boxes, anchors, stops, rule, bounds), rerun
