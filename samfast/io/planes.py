"""The one plane view of a (z, y, x) volume: every slice anyone takes (bench/eval, the streamer,
`samfast predict`) is ``plane_view(volume, plane)[index]``.

A view is the volume transposed so that its first axis walks the slices: axial (z, y, x), coronal
(y, z, x), sagittal (x, z, y); numpy views, not copies. PLANES[k] slices along numpy axis k.
"""

from __future__ import annotations

import numpy as np

PLANES = ("axial", "coronal", "sagittal")
#: numpy axes of a plane's view, slice axis first
ORDER = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}


def plane_order(plane: str) -> tuple[int, int, int]:
    if plane not in ORDER:
        raise ValueError(f"plane {plane!r}: use one of {', '.join(PLANES)}")
    return ORDER[plane]


def plane_view(volume: np.ndarray, plane: str) -> np.ndarray:
    """The volume with ``plane``'s slice axis first (a view, no copy). Trailing axes (RGB
    components) stay last."""
    order = plane_order(plane)
    return np.transpose(volume, (*order, *range(3, np.ndim(volume))))


def from_plane_view(stack: np.ndarray, plane: str) -> np.ndarray:
    """Inverse of plane_view: a stack of plane slices back in (z, y, x) order."""
    return np.transpose(stack, np.argsort(plane_order(plane)))
