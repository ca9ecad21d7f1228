"""Segment a volume from its prompts: each prompted slice on its own, or propagation from one slice.

The library API behind `samfast segment`; pure apart from the model calls (no files).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from samfast.clinical.prompts import SlicePrompt, VolumePrompts
from samfast.clinical.propagate import PropagationRule, propagate
from samfast.clinical.slice_model import SliceModel
from samfast.errors import InputError


@dataclasses.dataclass
class VolumeSegmentation:
    mask: np.ndarray  # (z, y, x) bool
    scores: dict[int, float]  # predicted IoU per segmented slice
    start_slice: int | None = None  # propagation only
    stops: dict[str, str] | None = None  # propagation only: why each direction ended


def propagation_start(prompts: VolumePrompts) -> int:
    """The clicked slice if there are clicks (all on one slice), else the middle of the box's range."""
    clicked = sorted(z for z, p in prompts.slices.items() if p.points is not None)
    if len(clicked) > 1:
        raise InputError(f"--propagate starts from one slice, but the clicks lie on slices {clicked}")
    return clicked[0] if clicked else prompts.start_slice


def segment_volume(
    model: SliceModel,
    prompts: VolumePrompts,
    pixel_spacing: tuple[float, float],
    propagate_from_one: bool = False,
    rule: PropagationRule | None = None,
    on_slice: Callable[[int], None] = lambda z: None,
) -> VolumeSegmentation:
    """Masks for every prompted slice, or (``propagate_from_one``) a propagation from one slice.

    ``pixel_spacing`` is (row, column) mm, used for the propagation margin.
    """
    depth = model.volume_input.shape[0]
    mask = np.zeros(model.volume_input.shape, dtype=bool)
    if not propagate_from_one:
        scores = {}
        for z, prompt in sorted(prompts.slices.items()):
            mask[z], scores[z], _, _ = model.predict(z, prompt)
            on_slice(z)
        return VolumeSegmentation(mask, scores)

    start = propagation_start(prompts)
    start_prompt = prompts.slices[start]
    start_mask, start_score, _, _ = model.predict(start, start_prompt)
    on_slice(start)
    z0, z1 = prompts.z_range
    # A box over several slices bounds the walk; a one-slice box or clicks leave the whole volume open.
    bounded = z1 > z0 and start_prompt.box is not None
    limit = start_prompt.box if bounded else None

    def predict(z: int, box: np.ndarray) -> tuple[np.ndarray, float]:
        found, score, _, _ = model.predict(z, SlicePrompt(box=box))
        on_slice(z)
        return found, score

    walk = propagate(
        predict,
        start,
        start_mask,
        start_prompt.box,
        (z0, z1) if bounded else (0, depth - 1),
        pixel_spacing,
        rule or PropagationRule(),
        limit,
        start_score,
    )
    for z, found in walk.masks.items():
        mask[z] = found
    return VolumeSegmentation(mask, {start: start_score, **walk.scores}, start, walk.stops)
