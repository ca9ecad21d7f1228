"""Prompts for a volume: a 3D box and/or clicks, in voxel indices or patient millimetres (LPS).

Everything is turned into per-slice prompts in voxel indices (x = column, y = row, z = slice) and
checked against the volume; a prompt outside it is an InputError, never silently clipped away.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samfast.errors import InputError

FRAMES = ("voxel", "lps")


@dataclasses.dataclass
class SlicePrompt:
    """One axial slice's prompt: a box x0 y0 x1 y1 and/or clicks (N x 2 x, y) with labels (N)."""

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclasses.dataclass
class VolumePrompts:
    """Per-slice prompts, plus the box's slice range (z0, z1) for propagation to stay inside."""

    slices: dict[int, SlicePrompt]
    z_range: tuple[int, int]
    #: The user's 3D box as (x0 y0 x1 y1 footprint in voxels, z0, z1), when one was given.
    box3d: tuple[np.ndarray, int, int] | None = None

    @property
    def start_slice(self) -> int:
        """The prompted slice propagation starts from: the middle of the prompted range."""
        prompted = sorted(self.slices)
        return prompted[len(prompted) // 2]


def _to_voxel(image: sitk.Image, xyz, frame: str) -> np.ndarray:
    if frame == "voxel":
        return np.asarray(xyz, dtype=np.float64)
    return np.asarray(image.TransformPhysicalPointToContinuousIndex([float(v) for v in xyz]))


def _check_inside(image: sitk.Image, xyz: np.ndarray, what: str) -> None:
    size = np.array(image.GetSize())
    # A voxel index i covers [i - 0.5, i + 0.5]: anything within the outer voxel faces is inside.
    if (xyz < -0.5).any() or (xyz > size - 0.5).any() or not np.isfinite(xyz).all():
        shown = ", ".join(f"{v:.1f}" for v in xyz)
        raise InputError(f"{what} ({shown} voxels) lies outside the {'×'.join(map(str, size))} volume")


def box_to_voxels(image: sitk.Image, box: list[float], frame: str = "voxel") -> tuple[np.ndarray, int, int]:
    """(x0 y0 x1 y1 in voxels, z0, z1) from a 3D box x0 y0 z0 x1 y1 z1 given in ``frame``.

    In LPS all 8 corners are mapped, so oblique series get the voxel box that holds the mm box.
    """
    if len(box) != 6:
        raise InputError(f"a 3D box needs 6 numbers x0 y0 z0 x1 y1 z1, got {len(box)}")
    low, high = np.asarray(box[:3], float), np.asarray(box[3:], float)
    if (low > high).any():
        raise InputError("box is inverted: need x0 <= x1, y0 <= y1 and z0 <= z1")
    corners = np.array([_to_voxel(image, c, frame) for c in itertools.product(*zip(low, high, strict=True))])
    for corner in corners:
        _check_inside(image, corner, "box corner")
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    size = np.array(image.GetSize()) - 1
    lo, hi = np.clip(lo, 0, size), np.clip(hi, 0, size)
    if hi[0] <= lo[0] or hi[1] <= lo[1]:
        raise InputError("box is empty in-plane: need x0 < x1 and y0 < y1")
    return np.array([lo[0], lo[1], hi[0], hi[1]], dtype=np.float32), int(round(lo[2])), int(round(hi[2]))


def parse_point(text: str) -> tuple[float, float, float, int]:
    """'X,Y,Z,LABEL' -> (x, y, z, label); LABEL 1 = foreground, 0 = background."""
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        x, y, z, label = (float(v) for v in parts)
        if label not in (0.0, 1.0):
            raise ValueError
    except ValueError:
        raise InputError(
            f"point {text!r}: expected X,Y,Z,LABEL with LABEL 1 or 0, such as 120,96,80,1"
        ) from None
    return x, y, z, int(label)


def build_prompts(
    image: sitk.Image,
    box: list[float] | None = None,
    points: list[tuple[float, float, float, int]] | None = None,
    frame: str = "voxel",
    slice_boxes: list[list[float]] | None = None,
) -> VolumePrompts:
    """Per-slice prompts: the 3D box on every slice of its z range (and kept as ``box3d``), each
    one-slice box (x0 y0 z x1 y1 z) on its slice, each click on its nearest slice."""
    if frame not in FRAMES:
        raise InputError(f"unknown coordinate frame {frame!r}; use voxel or lps")
    if box is None and not points and not slice_boxes:
        raise InputError("give a prompt: a 3D box, boxes on slices and/or clicks")
    slices: dict[int, SlicePrompt] = {}
    z_range = (0, image.GetSize()[2] - 1)
    box3d = None
    if box is not None:
        plane_box, z0, z1 = box_to_voxels(image, box, frame)
        slices = {z: SlicePrompt(box=plane_box) for z in range(z0, z1 + 1)}
        z_range, box3d = (z0, z1), (plane_box, z0, z1)
    for flat in slice_boxes or []:
        plane_box, z0, z1 = box_to_voxels(image, flat, frame)
        if z1 != z0:
            raise InputError(f"a slice box covers one slice (z0 = z1), this one slices {z0} to {z1}")
        if box is not None:
            raise InputError("give either one 3D box or boxes on slices, not both")
        if z0 in slices:
            raise InputError(f"two boxes on slice {z0}: anchors contradict each other; give one box a slice")
        slices[z0] = SlicePrompt(box=plane_box)
    for x, y, z, label in points or []:
        xyz = _to_voxel(image, (x, y, z), frame)
        _check_inside(image, xyz, "point")
        xyz = np.clip(xyz, 0, np.array(image.GetSize()) - 1)
        prompt = slices.setdefault(int(round(xyz[2])), SlicePrompt())
        point = np.array([[xyz[0], xyz[1]]], dtype=np.float32)
        prompt.points = point if prompt.points is None else np.vstack([prompt.points, point])
        labels = np.array([label], dtype=np.float32)
        prompt.labels = labels if prompt.labels is None else np.concatenate([prompt.labels, labels])
    return VolumePrompts(slices, z_range, box3d)


def read_prompts_file(path: str | Path, image: sitk.Image) -> VolumePrompts:
    """A JSON file {"frame": "voxel"|"lps", "box": [x0,y0,z0,x1,y1,z1] (a 3D box) or "boxes":
    [[x0,y0,z,x1,y1,z], ...] (2D boxes, one a slice), "points": [[x,y,z,label], ...]}."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable JSON prompts file ({error})") from None
    if not isinstance(spec, dict) or not set(spec) <= {"frame", "box", "boxes", "points"}:
        raise InputError(f"{path}: expected an object with keys frame, box, boxes, points")
    try:
        box = None if spec.get("box") is None else [float(v) for v in spec["box"]]
        boxes = [[float(v) for v in b] for b in spec.get("boxes") or []]
        points = [parse_point(",".join(str(v) for v in p)) for p in spec.get("points") or []]
    except (TypeError, ValueError):
        raise InputError(f"{path}: box, boxes and points must be lists of numbers") from None
    return build_prompts(image, box, points, str(spec.get("frame", "voxel")), boxes)
