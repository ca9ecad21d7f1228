"""An independent implementation of Putz et al.'s point protocol, for cross-checks in tests.

Written from the paper's text with different tools (k-d tree nearest-background search instead of a
distance transform), so a shared bug in samfast.eval.prompts would not hide here.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from samfast.eval.metrics import iou


def centre_by_brute_force(region: np.ndarray) -> tuple[int, int]:
    """Region pixel farthest from any pixel outside it (image border included), first in row-major.

    Nearest-neighbour search over explicit background coordinates, not a distance transform.
    """
    padded = np.pad(region, 1)
    inside = np.argwhere(padded)
    distance, _ = cKDTree(np.argwhere(~padded)).query(inside)
    best = inside[distance >= distance.max() - 1e-9]
    y, x = min(map(tuple, best))  # argwhere is row-major, min makes the order explicit
    return int(x) - 1, int(y) - 1


def putz_by_hand(predictor, gt: np.ndarray, max_points: int = 9) -> list[tuple[list[list[int]], list[float]]]:
    """(points so far, IoU of each of the 3 masks) per model call; the next point follows the best mask."""
    points, steps = [[*centre_by_brute_force(gt), 1]], []
    while True:
        coords = np.array([p[:2] for p in points], np.float32)
        masks, _, _ = predictor.predict(coords, np.array([p[2] for p in points], np.float32))
        ious = [iou(m, gt) for m in masks]
        steps.append(([list(p) for p in points], ious))
        best = masks[int(np.argmax(ious))]
        if len(points) == max_points or (best == gt).all():
            return steps
        if gt.sum() > best.sum():
            points.append([*centre_by_brute_force(gt & ~best), 1])
        else:
            points.append([*centre_by_brute_force(best & ~gt), 0])


def putz_points_by_hand(predictor, gt: np.ndarray, max_points: int = 9) -> list[list[int]]:
    return putz_by_hand(predictor, gt, max_points)[-1][0]
