"""Slices of a (z, y, x) volume in the three planes, Putz's tumour crop and the tri-planar vote.

The plane view itself is samfast.io.planes (re-exported here: plane_view, from_plane_view, PLANES).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samfast.io.planes import PLANES, from_plane_view, plane_order, plane_view

__all__ = [
    "PLANES",
    "crop_to_target",
    "from_plane_view",
    "grown_extent",
    "majority_vote",
    "plane_view",
    "slice_spacing",
    "spread",
    "target_slices",
    "visiting_order",
]


def slice_spacing(spacing_xyz: Sequence[float], plane: str) -> tuple[float, float]:
    """(row, column) mm of one slice in ``plane``, from SimpleITK's (x, y, z) spacing."""
    zyx = tuple(float(s) for s in reversed(tuple(spacing_xyz)))
    order = plane_order(plane)
    return zyx[order[1]], zyx[order[2]]


def crop_to_target(mask: np.ndarray, spacing_xyz: Sequence[float], margin_mm: float) -> tuple[slice, ...]:
    """(z, y, x) slices of the target's 3D extent grown by ``margin_mm`` per side, inside the volume.

    Putz et al.: "a cuboid region-of-interest fitted to the 3D tumor extent with a 2 cm margin". The
    margin is converted per axis with that axis' spacing.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("empty target has no extent to crop to")
    zyx_mm = np.array(list(reversed(tuple(spacing_xyz))), float)
    return grown_extent(mask, np.ceil(margin_mm / zyx_mm).astype(int))


def grown_extent(mask: np.ndarray, grow: Sequence[int]) -> tuple[slice, ...]:
    """Per-axis slices of a non-empty mask's extent grown by ``grow[axis]`` voxels, inside the array."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        start = max(int(present[0]) - int(grow[axis]), 0)
        stop = min(int(present[-1]) + 1 + int(grow[axis]), mask.shape[axis])
        box.append(slice(start, stop))
    return tuple(box)


def target_slices(view_mask: np.ndarray, min_area: int) -> np.ndarray:
    """Indices of the view's slices holding at least ``min_area`` target pixels (and at least one)."""
    areas = view_mask.reshape(view_mask.shape[0], -1).sum(axis=1)
    return np.flatnonzero(areas >= max(min_area, 1))


def spread(indices: np.ndarray, count: int | None) -> np.ndarray:
    """At most ``count`` indices spread evenly over ``indices`` (all of them when count is None)."""
    if count is None or count >= indices.size:
        return indices
    picks = np.linspace(0, indices.size - 1, count).round().astype(int)
    return indices[np.unique(picks)]


def visiting_order(indices: np.ndarray, areas: np.ndarray) -> tuple[list[int], dict[int, int | None]]:
    """The order an expert would segment slices in, and each slice's already-finished neighbour.

    Start at the slice with the largest target area, then walk outwards in both directions; a slice's
    neighbour is the adjacent slice on the side of the start, when that slice is in ``indices``.
    Used by the previous-slice mask selection (Putz et al., Discussion).
    """
    indices = [int(i) for i in indices]
    if not indices:
        return [], {}
    start = max(indices, key=lambda i: (int(areas[i]), -i))
    members = set(indices)
    below = sorted((i for i in indices if i < start), reverse=True)
    above = sorted(i for i in indices if i > start)
    order = [start]
    for low, high in zip(below + [None] * len(above), above + [None] * len(below), strict=False):
        order.extend(i for i in (low, high) if i is not None)
    neighbour: dict[int, int | None] = {start: None}
    for i in indices:
        if i != start:
            step = 1 if i < start else -1
            neighbour[i] = i + step if (i + step) in members else None
    return order, neighbour


def majority_vote(stacks: Sequence[np.ndarray]) -> np.ndarray:
    """Voxels marked by more than half of the stacks (2 of 3 for the tri-planar vote)."""
    total = np.sum([np.asarray(s, bool) for s in stacks], axis=0)
    return total * 2 > len(stacks)
