"""Overlap and surface-distance metrics on binary masks (2D or 3D).

Empty-vs-empty counts as perfect agreement, so stacked volumes with blank slices score sensibly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from samfast.eval.slicing import grown_extent


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """Tight x0, y0, x1, y1 box (pixel indices, inclusive) of a 2D mask."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("empty mask has no bounding box")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def _spacing(spacing: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    values = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)
    if len(values) != ndim or min(values) <= 0:
        raise ValueError(f"spacing {spacing} does not fit a {ndim}D mask (one positive value per axis)")
    return values


def _surface(mask: np.ndarray) -> np.ndarray:
    # Face-connected erosion: a voxel is on the surface when a face neighbour is background. Outside
    # the array counts as background, so an object cut by the image edge has a surface there too.
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def _surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: float | Sequence[float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """mm from every surface voxel of ``a`` to the surface of ``b`` and back; None if one is empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    sampling = _spacing(spacing, a.ndim)
    # On the box around both masks (a slice or volume is mostly far from the target) the surfaces
    # and distances are those of the whole array: outside the box is background, which the erosion
    # assumes beyond the array's edge too, and every surface voxel lies inside.
    box = grown_extent(a | b, (0,) * a.ndim)
    surface_a, surface_b = _surface(a[box]), _surface(b[box])
    if not surface_a.any() or not surface_b.any():
        return None
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=sampling)
    return to_b[surface_a], to_a[surface_b]


def nsd(
    a: np.ndarray, b: np.ndarray, spacing: float | Sequence[float] = 1.0, tolerance_mm: float = 1.0
) -> float:
    """Normalised surface Dice: share of both surfaces lying within ``tolerance_mm`` of the other.

    ``spacing`` is in the arrays' axis order (z, y, x for a SimpleITK array: reverse GetSpacing()).
    Both empty -> 1.0 (as ``dice``); exactly one empty -> 0.0.
    """
    if not np.asarray(a, bool).any() and not np.asarray(b, bool).any():
        return 1.0
    distances = _surface_distances(a, b, spacing)
    if distances is None:
        return 0.0
    a_to_b, b_to_a = distances
    close = int((a_to_b <= tolerance_mm).sum()) + int((b_to_a <= tolerance_mm).sum())
    return close / (a_to_b.size + b_to_a.size)


def hausdorff(
    a: np.ndarray, b: np.ndarray, spacing: float | Sequence[float] = 1.0, percentile: float = 100.0
) -> float:
    """Symmetric surface Hausdorff distance in mm: the larger of the two directed percentiles.

    Taking the max of the directed percentiles follows MONAI and DeepMind's surface-distance.
    Both empty -> 0.0; exactly one empty -> inf (no finite distance exists).
    """
    if not np.asarray(a, bool).any() and not np.asarray(b, bool).any():
        return 0.0
    distances = _surface_distances(a, b, spacing)
    if distances is None:
        return float("inf")
    return float(max(np.percentile(d, percentile) for d in distances))


def hd95(a: np.ndarray, b: np.ndarray, spacing: float | Sequence[float] = 1.0) -> float:
    """95th-percentile symmetric surface Hausdorff distance in mm (robust to a few stray voxels)."""
    return hausdorff(a, b, spacing, 95.0)
