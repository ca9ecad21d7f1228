"""The papers' prompt protocols: one table of records and one driver that runs them on many slices.

Each protocol is a record (first prompt, next-prompt rule, steps, mask selection, multimask); PROTOCOLS
is the only list of them (CLI help, settings and reports read it). ``run_tracks`` runs step k of every
slice still running in one batched Predictor.predict_rows call: a slice's next click depends only on
its own previous mask. One slice is a batch of one (run_points_putz & co.); a replay of recorded
steps on another backend (--compare) goes through the same driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from samfast.eval.metrics import bounding_box, iou
from samfast.eval.prompts import (
    Point,
    jittered_box,
    margin_box,
    mazurowski_first_point,
    mazurowski_next_point,
    putz_first_point,
    putz_next_point,
)

Step = dict[str, Any]


@dataclass
class SliceTask:
    """What a protocol needs beyond the image: the GT, spacing, the 3D box, a generator, the settings."""

    gt: np.ndarray
    spacing: tuple[float, float]  # (row, column) mm
    extent_box: np.ndarray | None
    rng: np.random.Generator | None
    settings: Any  # samfast.eval.settings.Settings (which imports this module)


def component_boxes(gt: np.ndarray) -> np.ndarray:
    """(K, 4) tight boxes of every 8-connected component of a 2D mask, largest first."""
    labelled, count = ndimage.label(np.asarray(gt, bool), structure=np.ones((3, 3), int))
    parts = [labelled == k for k in range(1, count + 1)]
    parts.sort(key=lambda part: -int(part.sum()))
    return np.stack([bounding_box(part) for part in parts])


@dataclass(frozen=True)
class Protocol:
    """One protocol. ``first`` gives the first call's (points, box); a box of shape (K, 4) is one box
    per region, decoded as K rows whose masks are united. ``next_point(gt, followed mask, rng)`` gives
    the next click or None (stop); ``follow`` names the mask the next click follows and every step
    records as chosen (oracle or suggested); ``multimask``: three masks per call, else one."""

    name: str
    first: Callable[[SliceTask], tuple[list[Point], np.ndarray | None]]
    next_point: Callable[[np.ndarray, np.ndarray, np.random.Generator], Point | None] | None
    steps: Callable[[Any], int]
    follow: Callable[[Any], str]
    multimask: bool
    feeds_logits: Callable[[Any], bool] = lambda s: False


def _tight_box(task: SliceTask) -> np.ndarray:
    return component_boxes(task.gt) if task.settings.box_per == "component" else bounding_box(task.gt)


def _box_record(name: str, box: Callable[[SliceTask], np.ndarray]) -> Protocol:
    # Single-mask output, as MedSAM-style models are trained; one call.
    return Protocol(name, lambda t: ([], box(t)), None, lambda s: 1, lambda s: "suggested", False)


def _putz_next(gt: np.ndarray, mask: np.ndarray, rng) -> Point | None:
    return putz_next_point(gt, mask)  # Putz's rule draws nothing at random


TABLE: tuple[Protocol, ...] = (
    _box_record("box", _tight_box),
    _box_record("box-jitter", lambda t: jittered_box(t.gt, t.rng, t.settings.jitter_px)),
    _box_record("box-margin", lambda t: margin_box(t.gt, t.rng, t.spacing, t.settings.margin_mm)),
    _box_record("box-3d", lambda t: t.extent_box),
    # Putz et al.: first point at the GT centre, then up to max_points in all, 3 masks each. The paper
    # places each next point from "the mask prediction" and reports the oracle mask (the expert keeps
    # the best), so the next point follows the oracle by default. Putz fed no mask prompts (their
    # Discussion); --feed-logits passes the followed mask's logits back, as SAM's interactive loop.
    Protocol(
        "points-putz",
        lambda t: ([putz_first_point(t.gt)], None),
        _putz_next,
        lambda s: s.max_points,
        lambda s: s.follow,
        True,
        lambda s: s.feed_logits,
    ),
    # Mazurowski et al. Algorithm 1: error-region centres, random ties; "we always use the mask with
    # highest confidence" (their Section 2), so the error region comes from the suggested mask.
    Protocol(
        "points-mazurowski",
        lambda t: ([mazurowski_first_point(t.gt, t.rng)], None),
        mazurowski_next_point,
        lambda s: s.max_points,
        lambda s: "suggested",
        True,
    ),
    # A box alone, then up to max_clicks Putz-rule correction clicks beside it.
    Protocol(
        "box-points",
        lambda t: ([], bounding_box(t.gt)),
        _putz_next,
        lambda s: s.max_clicks + 1,
        lambda s: s.follow,
        True,
    ),
)
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in TABLE}
ITERATIVE = tuple(p.name for p in TABLE if p.next_point is not None)  # the ones with click curves


@dataclass
class Track:
    """One slice under one protocol: its prompts so far and every step's record and masks.

    ``row`` is its embedding's row in the batch; ``script`` (a replay) holds recorded steps whose
    prompts and chosen masks are repeated instead of asking the protocol's rule.
    """

    row: int
    gt: np.ndarray
    points: list[Point]
    box: np.ndarray | None
    rng: np.random.Generator | None = None
    script: list[Step] | None = None
    mask_input: np.ndarray | None = None
    records: list[Step] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)  # every step's (C, H, W) masks
    done: bool = False


def start(protocol: Protocol, task: SliceTask, row: int, box: np.ndarray | None = None) -> Track:
    """A slice's track, its first prompt drawn (from ``task.rng`` where the protocol draws);
    ``box`` replaces the protocol's first box."""
    points, first_box = protocol.first(task)
    box = first_box if box is None else box
    return Track(
        row,
        np.asarray(task.gt, bool),
        list(points),
        None if box is None else np.asarray(box, np.float32),
        task.rng,
    )


def replaying(steps: list[Step], gt: np.ndarray, row: int) -> Track:
    """A track that repeats ``steps`` (another backend's records) prompt for prompt."""
    track = Track(row, np.asarray(gt, bool), [], None, script=steps)
    _load_script(track, 0)
    return track


def _load_script(track: Track, k: int) -> None:
    step = track.script[k]
    track.points = [tuple(p) for p in step["points"]]
    track.box = None if step["box"] is None else np.asarray(step["box"], np.float32)


def run_tracks(
    predictor, embeddings: np.ndarray, tracks: Sequence[Track], protocol: Protocol, settings
) -> None:
    """Run ``protocol`` on every track, step k of all running tracks in one predict_rows call.

    ``embeddings`` (N, C, h, w): track t decodes against ``embeddings[t.row]``. Tracks of slices of
    different sizes are fine (one call per size). Results land in each track's records and masks.
    """
    follow, feed = protocol.follow(settings), protocol.feeds_logits(settings)
    if follow not in ("oracle", "suggested"):
        raise ValueError(f"follow must be 'oracle' or 'suggested', got {follow!r}")
    steps = max((len(t.script) for t in tracks if t.script), default=protocol.steps(settings))
    for _ in range(steps):
        running = [t for t in tracks if not t.done]
        # Rows of one call share a slice size, a point count and prompt kinds (in a protocol all
        # running slices have taken the same steps, so this is one group per size).
        groups: dict[tuple, list[Track]] = {}
        for t in running:
            kinds = (t.gt.shape, len(t.points), t.box is None, t.mask_input is None)
            groups.setdefault(kinds, []).append(t)
        for group in groups.values():
            _step(predictor, embeddings, group, protocol, steps, follow, feed)


def _step(predictor, embeddings, group: list[Track], protocol, steps, follow, feed) -> None:
    counts = [1 if t.box is None or t.box.ndim == 1 else len(t.box) for t in group]
    rows = [t.row for t, n in zip(group, counts, strict=True) for _ in range(n)]
    coords = labels = boxes = mask_input = None
    if group[0].points:
        coords = np.array([[p[:2] for p in t.points] for t in group], np.float32)
        labels = np.array([[p[2] for p in t.points] for t in group], np.float32)
    if group[0].box is not None:
        boxes = np.concatenate([t.box.reshape(-1, 4) for t in group])
    if group[0].mask_input is not None:
        mask_input = np.stack([t.mask_input for t in group])
    multimask = protocol.multimask
    low_res, scores = predictor.predict_rows(
        embeddings, rows, group[0].gt.shape, coords, labels, boxes, mask_input, multimask
    )
    start = 0
    for track, n in zip(group, counts, strict=True):
        part = slice(start, start + n)
        start += n
        if n == 1 and (track.box is None or track.box.ndim == 1):
            masks, score, logits = (
                predictor.masks(low_res[part][0], track.gt.shape),
                scores[part][0],
                low_res[part][0],
            )
        else:  # one box per region: the slice's mask is their union, scored by the least sure box
            united = np.any([predictor.masks(row, track.gt.shape)[0] for row in low_res[part]], axis=0)
            masks, score, logits = united[None], scores[part][:, 0].min(keepdims=True), None
        _advance(track, masks, score, logits, protocol, steps, follow, feed)


def _record(track: Track, masks: np.ndarray, scores: np.ndarray) -> Step:
    ious = [iou(mask, track.gt) for mask in masks]
    oracle, suggested = int(np.argmax(ious)), int(np.argmax(scores))
    return {
        "points": [[int(v) for v in p] for p in track.points],
        "box": None if track.box is None else track.box.tolist(),
        "mask_input": track.mask_input is not None,
        "ious": [float(v) for v in ious],
        # Rounded: the last bits of a float32 score are not worth storing (or diffing).
        "predicted_ious": [round(float(v), 6) for v in scores],
        "oracle": oracle,
        "suggested": suggested,
        "oracle_iou": float(ious[oracle]),
        "suggested_iou": float(ious[suggested]),
    }


def _advance(
    track: Track, masks, scores, logits, protocol: Protocol, steps: int, follow: str, feed: bool
) -> None:
    """Record a slice's call, then give it its next prompt or stop it."""
    record = _record(track, masks, scores)
    record["step"] = len(track.records) + 1
    if track.script is not None:
        chosen = record["chosen"] = track.script[len(track.records)]["chosen"]
    else:
        chosen = record["chosen"] = record[follow]
    track.records.append(record)
    track.masks.append(masks)
    if feed and logits is not None:
        track.mask_input = logits[chosen][None]
    k = len(track.records)
    if track.script is not None:
        track.done = k == len(track.script)
        if not track.done:
            _load_script(track, k)
        return
    # Stops early when the followed mask equals the GT (no error left to click on).
    point = (
        None
        if k == steps or protocol.next_point is None
        else protocol.next_point(track.gt, masks[chosen], track.rng)
    )
    if point is None:
        track.done = True
    else:
        track.points.append(point)


# -- without an evaluation run: slices with embeddings, or the predictor's current image ---------------


def run_slices(
    predictor,
    embeddings: np.ndarray,
    gts: Sequence[np.ndarray],
    protocol: Protocol | str,
    rngs: Sequence[np.random.Generator | None] | None = None,
    boxes: Sequence[np.ndarray] | None = None,
    masks_out: list | None = None,
    **settings,
) -> list[list[Step]]:
    """``protocol`` on slices ``gts`` whose (N, C, h, w) ``embeddings`` are given, one batch; element
    i equals the protocol run on slice i alone. ``rngs[i]``: slice i's generator (drawing protocols);
    ``boxes[i]`` replaces slice i's first box; ``masks_out`` receives one list of (C, H, W) masks
    per slice; ``settings``: Settings fields that differ from their defaults (max_points, follow, ...)."""
    from samfast.eval.settings import Settings  # settings.py reads PROTOCOLS from this module

    protocol = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    settings = Settings(**settings)
    rngs = [None] * len(gts) if rngs is None else rngs
    boxes = [None] * len(gts) if boxes is None else boxes
    if not len(embeddings) == len(gts) == len(rngs) == len(boxes):
        raise ValueError(
            f"{len(embeddings)} embeddings, {len(gts)} masks, {len(rngs)} generators, {len(boxes)} boxes"
        )
    tasks = [
        SliceTask(np.asarray(gt, bool), (1.0, 1.0), None, rng, settings)
        for gt, rng in zip(gts, rngs, strict=True)
    ]
    tracks = [start(protocol, task, i, box) for i, (task, box) in enumerate(zip(tasks, boxes, strict=True))]
    run_tracks(predictor, np.asarray(embeddings, np.float32), tracks, protocol, settings)
    if masks_out is not None:
        masks_out.extend(t.masks for t in tracks)
    return [t.records for t in tracks]


def run_one(predictor, gt, protocol, rng=None, box=None, masks_out=None, **settings) -> list[Step]:
    """``protocol`` on the predictor's current image (a batch of one)."""
    per_slice: list = []
    (records,) = run_slices(
        predictor, predictor.get_image_embedding(), [gt], protocol, [rng], [box], per_slice, **settings
    )
    if masks_out is not None:
        masks_out.extend(per_slice[0])
    return records


def run_points_putz(predictor, gt, max_points=9, feed_logits=False, follow="oracle", masks_out=None):
    return run_one(
        predictor,
        gt,
        "points-putz",
        masks_out=masks_out,
        max_points=max_points,
        feed_logits=feed_logits,
        follow=follow,
    )


def run_points_mazurowski(predictor, gt, rng, max_points=9, masks_out=None):
    return run_one(predictor, gt, "points-mazurowski", rng, masks_out=masks_out, max_points=max_points)


def run_box(predictor, gt, box, multimask_output=False, masks_out=None):
    protocol = replace(PROTOCOLS["box"], multimask=multimask_output)
    return run_one(predictor, gt, protocol, box=box, masks_out=masks_out)


def run_box_points(predictor, gt, box, max_clicks=5, follow="oracle", masks_out=None):
    return run_one(
        predictor, gt, "box-points", box=box, masks_out=masks_out, max_clicks=max_clicks, follow=follow
    )
