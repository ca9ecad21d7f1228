"""A slice mask as closed polygons along the voxel edges (the outer boundary of the pixel squares).

Every edge between a mask pixel and a background pixel belongs to exactly one polygon, and every
polygon is simple (no vertex visited twice), so the rule planning systems rasterise with (a voxel is
inside when its centre is inside an odd number of a slice's contours: holes are inner contours,
XOR) gives back exactly the mask. Voxel centres lie half a voxel from every edge, so that test never
meets a tie; one voxel becomes a 4-point square, a diagonal chain one square per 4-connected part.
"""

from __future__ import annotations

import numpy as np


def _boundary_edges(plane: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) vertex ids of the boundary edges, mask on the left; vertex id = y·(W+1) + x.

    Vertex (x, y) is the pixel corner at column x − 0.5, row y − 0.5 in index coordinates.
    """
    padded = np.pad(plane, 1)
    inside = padded[1:-1, 1:-1]
    stride = width + 1
    starts, ends = [], []
    # (neighbour, start corner, end corner) with corners as (dx, dy) from the pixel's top-left corner
    sides = (
        (padded[:-2, 1:-1], (1, 0), (0, 0)),  # top
        (padded[1:-1, :-2], (0, 0), (0, 1)),  # left
        (padded[2:, 1:-1], (0, 1), (1, 1)),  # bottom
        (padded[1:-1, 2:], (1, 1), (1, 0)),  # right
    )
    for neighbour, (sx, sy), (ex, ey) in sides:
        rows, cols = np.nonzero(inside & ~neighbour)
        starts.append((rows + sy) * stride + cols + sx)
        ends.append((rows + ey) * stride + cols + ex)
    return np.concatenate(starts), np.concatenate(ends)


def _cycles(starts: np.ndarray, ends: np.ndarray) -> list[list[int]]:
    """Walk the edges into closed vertex cycles (each edge used once; saddle vertices may repeat)."""
    outgoing: dict[int, list[int]] = {}
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        outgoing.setdefault(start, []).append(end)
    cycles = []
    for first in list(outgoing):
        while outgoing.get(first):
            cycle, vertex = [first], outgoing[first].pop()
            while vertex != first:
                cycle.append(vertex)
                vertex = outgoing[vertex].pop()
            cycles.append(cycle)
    return cycles


def _simple_loops(cycle: list[int]) -> list[list[int]]:
    """Split a cycle at each vertex it visits twice: the same edges, as loops that never touch
    themselves (a pinch where two pixels meet at a corner becomes two polygons)."""
    loops, stack, position = [], [], {}
    for vertex in [*cycle, cycle[0]]:
        if vertex in position:
            i = position[vertex]
            loops.append(stack[i:])
            for dropped in stack[i + 1 :]:
                del position[dropped]
            del stack[i + 1 :]
        else:
            position[vertex] = len(stack)
            stack.append(vertex)
    return loops


def _corners(points: np.ndarray) -> np.ndarray:
    """Drop the vertices in the middle of straight runs."""
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    turning = (before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) != 0
    return points[turning]


def mask_polygons(plane: np.ndarray) -> list[np.ndarray]:
    """Closed simple polygons (N × 2 float, x = column, y = row in voxel index coordinates, corners
    only, N >= 4) whose XOR of voxel-centre interiors is exactly ``plane`` (rows × columns, bool)."""
    plane = np.asarray(plane, bool)
    width = plane.shape[1]
    starts, ends = _boundary_edges(plane, width)
    polygons = []
    for cycle in _cycles(starts, ends):
        for loop in _simple_loops(cycle):
            ids = np.asarray(loop)
            points = np.stack([ids % (width + 1), ids // (width + 1)], axis=1).astype(np.float64)
            polygons.append(_corners(points) - 0.5)
    return polygons


def polygon_area(points: np.ndarray) -> float:
    """Signed shoelace area of a closed polygon (N × 2)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def rasterise_xor(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Voxel-centre rasterisation with XOR of nested contours: pixel (r, c) is set when its centre
    (x = c, y = r) lies inside an odd number of ``polygons`` (crossing-number test per row)."""
    mask = np.zeros(shape, dtype=bool)
    columns = np.arange(shape[1])
    for points in polygons:
        x0, y0 = points[:, 0], points[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        low, high = np.minimum(y0, y1), np.maximum(y0, y1)
        rows = np.arange(max(0, int(np.ceil(low.min()))), min(shape[0], int(np.floor(high.max())) + 1))
        for row in rows:
            # half-open rule: an edge counts for rows with low <= y < high, so a vertex is counted once
            crossing = (low <= row) & (row < high)
            t = (row - y0[crossing]) / (y1[crossing] - y0[crossing])
            xs = x0[crossing] + t * (x1[crossing] - x0[crossing])
            mask[row] ^= (columns[None, :] < xs[:, None]).sum(axis=0) % 2 == 1
    return mask
