"""Iterative prompt protocols run step by step over many slices: one decoder call per step.

Each slice's next click depends only on its own previous mask, so step k of every slice still
running goes into one decode. The records equal samfast.eval.protocols' per-slice runners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from samfast import preprocess
from samfast.backends.base import Prompts, splits_decoder
from samfast.eval import protocols
from samfast.eval.prompts import (
    Point,
    mazurowski_first_point,
    mazurowski_next_point,
    putz_first_point,
    putz_next_point,
)

Step = dict
# Split-decoder image states kept across steps: ~10.5 MB a slice for LiteMedSAM, so 12 slices;
# the rest are recomputed per step (~6 ms each on 2 cores; bench/README.md: peak RSS of a volume).
STATE_BYTES = 128 << 20
NextPoint = Callable[[int, np.ndarray, np.ndarray], "Point | None"]  # (slice index, gt, mask)


def _row(prompts: Prompts, i: int) -> Prompts:
    return _rows(prompts, slice(i, i + 1))


def decode_rows(backend, embeddings: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
    """Row i of ``prompts`` against embedding i: (B, 4, L, L) low-res logits and (B, 4) IoUs.

    Backends with ``decode_rows`` (torch) do it in one call. The plain exported decoder graphs
    repeat a single embedding over the prompt batch, so for them it is one call per row; on the
    CPU that costs nothing, as decoder time grows linearly with the batch there (bench/README.md).
    Split decoders go through ImageStates.decode instead.
    """
    rows = getattr(backend, "decode_rows", None)
    if rows is not None:
        return rows(embeddings, prompts)
    outs = [backend.decode(embeddings[i : i + 1], _row(prompts, i)) for i in range(len(embeddings))]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


# Rows per split-decoder call. On the CPU a batch gains nothing (time grows with the rows) and
# multiplies the activations the session's arena keeps; one row also needs no stacking of states.
ROWS_PER_CALL = 1


class ImageStates:
    """Split-decoder image states of a protocol's slices, computed once each and kept while they
    fit in ``max_bytes``; states of slices past that are recomputed at every step (same result,
    more time), so memory stays bounded however many slices a volume has."""

    def __init__(self, backend, max_bytes: int) -> None:
        self.backend = backend
        self.max_bytes = max_bytes
        self.kept: dict[int, dict[str, np.ndarray]] = {}
        self.bytes = 0
        self.computed = 0

    def rows(self, indices: Sequence[int], embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """The states of slices ``indices`` (rows of all the slices' ``embeddings``), stacked."""
        missing = [i for i in dict.fromkeys(indices) if i not in self.kept]
        fresh = self.backend.image_state(embeddings[missing]) if missing else {}
        self.computed += len(missing)
        made = {}
        for n, i in enumerate(missing):
            state = {name: value[n : n + 1] for name, value in fresh.items()}
            size = sum(v.nbytes for v in state.values())
            if self.bytes + size <= self.max_bytes:
                state = {name: value.copy() for name, value in state.items()}  # not a view of `fresh`
                self.kept[i] = state
                self.bytes += size
            made[i] = state
        parts = [self.kept.get(i) or made[i] for i in indices]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def decode(
        self, indices: Sequence[int], embeddings: np.ndarray, prompts: Prompts
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prompt row r against slice ``indices[r]``, ROWS_PER_CALL rows a call; no mask inputs."""
        outs = []
        for start in range(0, len(indices), ROWS_PER_CALL):
            part = slice(start, start + ROWS_PER_CALL)
            outs.append(self.backend.decode_state(self.rows(indices[part], embeddings), _rows(prompts, part)))
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def _rows(prompts: Prompts, part: slice) -> Prompts:
    def take(value):
        return None if value is None else value[part]

    return Prompts(
        take(prompts.point_coords), take(prompts.point_labels), take(prompts.boxes), take(prompts.mask_input)
    )


class _Decoded:
    """Stands in for a predictor whose answer is already known, so protocols._predict builds the
    record exactly as the per-slice runners do."""

    def __init__(self, masks: np.ndarray, scores: np.ndarray, low_res: np.ndarray) -> None:
        self.result = (masks, scores, low_res)

    def predict(self, **_prompt):
        return self.result


@dataclass
class _Track:
    index: int
    gt: np.ndarray
    points: list[Point]
    box: np.ndarray | None
    mask_input: np.ndarray | None = None
    records: list[Step] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)  # every step's (3, H, W) masks, if kept
    done: bool = False


def _step_prompts(tracks: list[_Track], original_size: tuple[int, int], size: int) -> Prompts:
    prompts = Prompts()
    if tracks[0].points:
        coords = np.array([[p[:2] for p in t.points] for t in tracks], np.float32)
        prompts.point_coords = preprocess.transform_coords(coords, original_size, size)
        prompts.point_labels = np.array([[p[2] for p in t.points] for t in tracks], np.float32)
    if tracks[0].box is not None:
        boxes = np.stack([t.box for t in tracks]).astype(np.float32)
        prompts.boxes = preprocess.transform_boxes(boxes, original_size, size)
    if tracks[0].mask_input is not None:
        prompts.mask_input = np.concatenate([t.mask_input for t in tracks])[:, None]
    return prompts


def _as_embeddings(embeddings) -> np.ndarray:
    if isinstance(embeddings, np.ndarray) and embeddings.ndim == 4:
        return embeddings
    return np.concatenate([np.asarray(e, np.float32).reshape(1, *np.shape(e)[-3:]) for e in embeddings])


def run_batched(
    predictor,
    embeddings,
    gts: Sequence[np.ndarray],
    first_points: Sequence[list[Point]],
    next_point: NextPoint,
    steps: int,
    boxes: Sequence[np.ndarray] | None = None,
    follow: str = "oracle",
    feed_logits: bool = False,
    masks_out: list | None = None,
    state_bytes: int = STATE_BYTES,
) -> list[list[Step]]:
    """protocols._iterate over all slices at once: step k of every running slice in one decode.

    ``embeddings``: (N, C, h, w) or N arrays of (1, C, h, w), slice i's GT is ``gts[i]`` (its shape
    is the slice's). Slices of different sizes are fine; prompts must agree in count per step,
    which they do since every running slice has taken the same number of steps. ``masks_out``, a
    list, receives one list per slice of every step's masks (C, H, W), as protocols' ``masks_out``.
    ``state_bytes`` bounds the split-decoder image states kept between steps (see ImageStates).
    """
    if follow not in ("oracle", "suggested"):
        raise ValueError(f"follow must be 'oracle' or 'suggested', got {follow!r}")
    embeddings = _as_embeddings(embeddings)
    if len(embeddings) != len(gts) or len(first_points) != len(gts):
        raise ValueError(f"{len(embeddings)} embeddings, {len(gts)} masks, {len(first_points)} first points")
    tracks = [
        _Track(
            i, np.asarray(gt, bool), list(first), None if boxes is None else np.asarray(boxes[i], np.float32)
        )
        for i, (gt, first) in enumerate(zip(gts, first_points, strict=True))
    ]
    size = predictor.spec.input_size
    states = ImageStates(predictor.backend, state_bytes) if splits_decoder(predictor.backend) else None
    for _ in range(steps):
        running = [t for t in tracks if not t.done]
        if not running:
            break
        # One decode per slice size (a volume has one): prompt transforms depend on the size.
        for shape in dict.fromkeys(t.gt.shape for t in running):
            group = [t for t in running if t.gt.shape == shape]
            indices = [t.index for t in group]
            prompts = _step_prompts(group, shape, size)
            if states is not None and prompts.mask_input is None:
                low_res, scores = states.decode(indices, embeddings, prompts)
            else:
                low_res, scores = decode_rows(predictor.backend, embeddings[indices], prompts)
            low_res, scores = low_res[:, 1:], scores[:, 1:]  # multimask: tokens 1..3
            for row, track in enumerate(group):
                # one slice at a time: full-size logits of a whole volume would be a large transient
                masks = predictor.postprocess_masks(low_res[row : row + 1], original_size=shape)[0] > 0.0
                _advance(
                    track,
                    masks,
                    scores[row],
                    low_res[row],
                    next_point,
                    steps,
                    follow,
                    feed_logits,
                    masks_out is not None,
                )
    if masks_out is not None:
        masks_out.extend(t.masks for t in tracks)
    return [t.records for t in tracks]


def _advance(track: _Track, masks, scores, low_res, next_point, steps, follow, feed_logits, keep) -> None:
    """The body of protocols._iterate's loop for one slice, after its model call."""
    record, masks, low_res = protocols._predict(
        _Decoded(masks, scores, low_res), track.gt, track.points, track.box, track.mask_input, True
    )
    record["step"] = len(track.records) + 1
    track.records.append(record)
    if keep:
        track.masks.append(masks)
    chosen = record["chosen"] = record[follow]
    if feed_logits:
        track.mask_input = low_res[chosen][None]
    if len(track.records) == steps:
        track.done = True
        return
    point = next_point(track.index, track.gt, masks[chosen])
    if point is None:
        track.done = True
    else:
        track.points.append(point)


def batched_points_putz(
    predictor,
    embeddings,
    gts,
    max_points: int = 9,
    feed_logits: bool = False,
    follow: str = "oracle",
    masks_out: list | None = None,
    state_bytes: int = STATE_BYTES,
) -> list[list[Step]]:
    """protocols.run_points_putz for every slice; element i equals run_points_putz on slice i."""
    firsts = [[putz_first_point(np.asarray(gt, bool))] for gt in gts]
    return run_batched(
        predictor,
        embeddings,
        gts,
        firsts,
        lambda i, gt, pred: putz_next_point(gt, pred),
        max_points,
        follow=follow,
        feed_logits=feed_logits,
        masks_out=masks_out,
        state_bytes=state_bytes,
    )


def batched_points_mazurowski(
    predictor,
    embeddings,
    gts,
    rngs: Sequence[np.random.Generator],
    max_points: int = 9,
    masks_out: list | None = None,
    state_bytes: int = STATE_BYTES,
) -> list[list[Step]]:
    """protocols.run_points_mazurowski per slice, slice i drawing its ties from ``rngs[i]`` (one
    generator per slice, as if run_points_mazurowski(predictor, gts[i], rngs[i]) ran alone)."""
    if len(rngs) != len(gts):
        raise ValueError(f"need one generator per slice: {len(rngs)} for {len(gts)} slices")
    firsts = [[mazurowski_first_point(np.asarray(gt, bool), rng)] for gt, rng in zip(gts, rngs, strict=True)]
    return run_batched(
        predictor,
        embeddings,
        gts,
        firsts,
        lambda i, gt, pred: mazurowski_next_point(gt, pred, rngs[i]),
        max_points,
        follow="suggested",
        masks_out=masks_out,
        state_bytes=state_bytes,
    )


def batched_box_points(
    predictor,
    embeddings,
    gts,
    boxes: Sequence[np.ndarray],
    max_clicks: int = 5,
    follow: str = "oracle",
    masks_out: list | None = None,
    state_bytes: int = STATE_BYTES,
) -> list[list[Step]]:
    """protocols.run_box_points per slice: box i alone, then up to ``max_clicks`` Putz clicks."""
    return run_batched(
        predictor,
        embeddings,
        gts,
        [[] for _ in gts],
        lambda i, gt, pred: putz_next_point(gt, pred),
        max_clicks + 1,
        boxes=boxes,
        follow=follow,
        masks_out=masks_out,
        state_bytes=state_bytes,
    )
