"""Overlap metrics on binary masks (2D or 3D).

Empty-vs-empty counts as perfect agreement, so stacked volumes with blank slices score sensibly.
"""

from __future__ import annotations

import numpy as np


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
