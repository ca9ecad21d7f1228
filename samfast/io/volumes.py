"""The one volume reader: a NIfTI/NRRD/MHA file or a DICOM series folder, and the suffixes a
volume file may have. bench/eval datasets, `samfast segment`, `samfast predict` and serve read here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from samfast.errors import InputError

if TYPE_CHECKING:
    import SimpleITK as sitk

#: File suffixes of a 3D volume (in or out); a folder is read as a DICOM series.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_volume(path: str | os.PathLike, scalar_3d: bool = False):
    """(image, DICOM series or None) of a volume file or a DICOM series folder (one series, no
    missing slices, even spacing: checked by read_dicom_series). ``scalar_3d`` refuses anything but
    a 3D single-channel image."""
    from samfast.io.images import read_image

    path = Path(path)
    series = None
    if path.is_dir():
        from samfast.io.dicom_series import read_dicom_series

        image, series = read_dicom_series(path)
    else:
        image = read_image(path)
    if scalar_3d and (image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1):
        raise InputError(f"{path}: need a 3D single-channel volume, got {_kind(image)}")
    return image, series


def _kind(image: sitk.Image) -> str:
    channels = image.GetNumberOfComponentsPerPixel()
    return f"{image.GetDimension()}D" + (f" with {channels} channels" if channels != 1 else "")
