"""DICOM series built from the shipped demo NIfTI cases, for the segment/serve tests.

A crop keeps the tests fast: the slices around the tumour's middle, in-plane a square around it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from conftest import DEMO, TUMOUR_CORE

from samfast.clinical.series_writer import write_dicom_series


def demo_images(case: str) -> tuple[sitk.Image, sitk.Image]:
    folder = DEMO / case
    return (
        sitk.ReadImage(str(folder / f"{case}_t1ce.nii.gz")),
        sitk.ReadImage(str(folder / f"{case}_seg.nii.gz")),
    )


def tumour_crop(case: str, slices: int = 6, size: int = 112) -> tuple[sitk.Image, sitk.Image]:
    """(t1ce, seg) cropped to ``slices`` axial slices centred on the tumour core and size × size pixels."""
    image, label = demo_images(case)
    core = np.isin(sitk.GetArrayViewFromImage(label), TUMOUR_CORE)
    zs, ys, xs = (np.flatnonzero(core.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    cz, cy, cx = ((v.min() + v.max()) // 2 for v in (zs, ys, xs))
    z0, y0, x0 = cz - slices // 2, max(0, cy - size // 2), max(0, cx - size // 2)
    index, extent = [int(x0), int(y0), int(z0)], [size, size, slices]
    return sitk.RegionOfInterest(image, extent, index), sitk.RegionOfInterest(label, extent, index)


def oblique(image: sitk.Image, spacing=(0.9, 0.8, 2.5), degrees: float = 20.0) -> sitk.Image:
    """The same voxels with anisotropic spacing and a rotated direction, to test geometry handling."""
    out = sitk.Image(image)
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    out.SetDirection(tuple(rotation.ravel()))
    out.SetSpacing(spacing)
    out.SetOrigin((-12.5, 30.25, 7.0))
    return out


def build_series(image: sitk.Image, folder: Path) -> Path:
    write_dicom_series(image, folder)
    return folder
