"""Simulated user prompts from a ground-truth mask: the papers' point rules and box perturbations.

Pure numpy/scipy on 2D masks (rows y, columns x); points come back as (x, y, label) as SAM takes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from samfast.eval.metrics import bounding_box
from samfast.eval.slicing import grown_extent

Point = tuple[int, int, int]


def _distance_inside(region: np.ndarray) -> np.ndarray:
    """Euclidean distance of each region pixel to the nearest pixel outside it.

    The mask is padded with background first, so the image border counts as boundary: a region cut
    by the border is centred inside the visible part (as RITM's click simulator does) instead of
    being pulled onto the edge, which distance_transform_edt would otherwise treat as interior.
    """
    region = np.asarray(region, bool)
    distance = np.zeros(region.shape)
    if region.any():
        # On the region's box only, the same distances: for a pixel inside, a background pixel
        # beyond the box is never nearer than the one on the box's face between them.
        box = grown_extent(region, (0, 0))
        padded = np.pad(region[box], 1, constant_values=False)
        distance[box] = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    return distance


def _as_masks(gt: np.ndarray, pred: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    gt = np.asarray(gt, bool)
    if gt.ndim != 2:
        raise ValueError(f"ground truth must be a 2D mask, got shape {gt.shape}")
    if not gt.any():
        raise ValueError("ground truth is empty: no point can be placed")
    pred = np.zeros_like(gt) if pred is None else np.asarray(pred, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} vs {pred.shape}")
    return gt, pred


def _first_maximum(region: np.ndarray) -> tuple[int, int]:
    # np.argmax returns the first maximum in row-major (y, then x) order: deterministic ties.
    y, x = np.unravel_index(int(np.argmax(_distance_inside(region))), region.shape)
    return int(x), int(y)


def _random_maximum(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    distance = _distance_inside(region)
    # Exact equality is safe: every candidate comes from the same distance map.
    ys, xs = np.nonzero(distance == distance.max())
    pick = int(rng.integers(ys.size))
    return int(xs[pick]), int(ys[pick])


def putz_first_point(gt: np.ndarray) -> Point:
    """Foreground point at the tumour centre: the maximum of the GT's distance transform.

    Ties go to the first maximum in row-major order, so the protocol is deterministic.
    """
    gt, _ = _as_masks(gt)
    return (*_first_maximum(gt), 1)


def putz_next_point(gt: np.ndarray, pred: np.ndarray) -> Point | None:
    """Putz et al. step 3: the centre of the larger-side set difference; None when pred == GT.

    GT area > predicted area -> foreground point at the centre of GT − pred; otherwise a background
    point at the centre of pred − GT. If the chosen difference is empty, the other one is used.
    """
    gt, pred = _as_masks(gt, pred)
    missed, extra = gt & ~pred, pred & ~gt
    if not missed.any() and not extra.any():
        return None
    candidates = [(missed, 1), (extra, 0)]
    if int(gt.sum()) <= int(pred.sum()):
        candidates.reverse()
    region, label = next((r, lab) for r, lab in candidates if r.any())
    return (*_first_maximum(region), label)


def mazurowski_first_point(gt: np.ndarray, rng: np.random.Generator) -> Point:
    """Mazurowski et al. Algorithm 1, lines 1-4: GT pixel farthest from background, random ties."""
    gt, _ = _as_masks(gt)
    return (*_random_maximum(gt, rng), 1)


def mazurowski_next_point(gt: np.ndarray, pred: np.ndarray, rng: np.random.Generator) -> Point | None:
    """Algorithm 1, lines 6-10: the pixel of the error region (Y∪M)−(Y∩M) farthest from its boundary.

    Labelled 1 (foreground) if it lies inside the GT, else 0; random ties; None when pred == GT.
    """
    gt, pred = _as_masks(gt, pred)
    error = gt ^ pred
    if not error.any():
        return None
    x, y = _random_maximum(error, rng)
    return x, y, int(gt[y, x])


def _clip_box(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    # Inclusive pixel indices, as bounding_box gives them: the far edge is the last row/column.
    height, width = shape
    return np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.float32)


def jittered_box(gt: np.ndarray, rng: np.random.Generator, max_px: int = 20) -> np.ndarray:
    """MedSAM's training box: each side of the tight box moved outward by a random 0..max_px pixels."""
    gt, _ = _as_masks(gt)
    shift = rng.integers(0, max_px + 1, size=4)
    return _clip_box(bounding_box(gt) + shift * np.array([-1, -1, 1, 1]), gt.shape)


def margin_box(
    gt: np.ndarray, rng: np.random.Generator, spacing: Sequence[float], max_mm: float = 20.0
) -> np.ndarray:
    """Ren et al.'s box: each side moved outward by a random 0..max_mm millimetres.

    ``spacing`` is (row, column) mm, i.e. (y, x); each side's margin is converted with its own axis
    spacing, so anisotropic pixels get fewer pixels of margin along their long axis.
    """
    gt, _ = _as_masks(gt)
    row_mm, col_mm = (float(s) for s in spacing)
    if row_mm <= 0 or col_mm <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    margin_px = rng.uniform(0.0, max_mm, size=4) / np.array([col_mm, row_mm, col_mm, row_mm])
    return _clip_box(bounding_box(gt) + margin_px * np.array([-1, -1, 1, 1]), gt.shape)


def extent_box_3d(volume_mask: np.ndarray) -> np.ndarray:
    """Box of the whole (z, y, x) tumour projected on one slice: Putz's box, the same on every slice."""
    volume_mask = np.asarray(volume_mask, bool)
    if volume_mask.ndim != 3:
        raise ValueError(f"volume mask must be 3D (z, y, x), got shape {volume_mask.shape}")
    if not volume_mask.any():
        raise ValueError("empty mask has no bounding box")
    return bounding_box(volume_mask.any(axis=0))
