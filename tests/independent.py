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


def contour_volume_mm3(rtstruct_path, thickness_mm: float) -> float:
    """An RT Structure Set's volume from its ContourData alone: per image, the XOR area of its contours
    (a contour inside an odd number of others is a hole), times the slice thickness.

    Written without samfast's code: plane axes from Newell's normal, matplotlib's point-in-polygon.
    """
    import pydicom
    from matplotlib.path import Path as PolygonPath

    structure = pydicom.dcmread(rtstruct_path)
    by_image: dict[str, list[np.ndarray]] = {}
    for roi in structure.ROIContourSequence:
        for contour in getattr(roi, "ContourSequence", None) or []:
            points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            image = str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)
            by_image.setdefault(image, []).append(points)
    total = 0.0
    for contours in by_image.values():
        first = contours[0]
        following = np.roll(first, -1, axis=0)
        normal = np.cross(first, following).sum(axis=0)  # Newell: twice the vector area
        normal /= np.linalg.norm(normal)
        u = following[0] - first[0]
        u /= np.linalg.norm(u)
        v = np.cross(normal, u)
        flat = [np.stack([(c - first[0]) @ u, (c - first[0]) @ v], axis=1) for c in contours]
        for i, polygon in enumerate(flat):
            x, y = polygon[:, 0], polygon[:, 1]
            area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
            probe = (polygon[0] + polygon[1]) / 2  # an edge midpoint: on no other contour
            depth = sum(PolygonPath(o).contains_point(probe) for j, o in enumerate(flat) if j != i)
            total += area if depth % 2 == 0 else -area
    return total * thickness_mm
