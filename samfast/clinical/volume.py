"""A volume to segment: a NIfTI/NRRD/MHA file or a DICOM series folder, its intensities scaled for
the model, and 3D masks written back with exactly its geometry.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samfast.errors import InputError
from samfast.io.atomic import atomic_path, full_suffix
from samfast.io.images import check_written
from samfast.io.volumes import VOLUME_SUFFIXES, read_volume

__all__ = ["VOLUME_SUFFIXES", "Volume", "check_mask_path", "load_volume", "write_volume_mask"]


@dataclasses.dataclass
class Volume:
    """``image`` keeps the geometry; ``series`` is set when the volume came from a DICOM folder."""

    path: Path
    image: sitk.Image
    series: object | None = None  # samfast.io.dicom_series.DicomSeries

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x), the numpy order of every mask."""
        return tuple(int(s) for s in self.image.GetSize()[::-1])  # type: ignore[return-value]

    def array(self) -> np.ndarray:
        return sitk.GetArrayViewFromImage(self.image)

    def normalised(self, preset: str = "auto") -> np.ndarray:
        """(z, y, x) float32 model input; 'auto' windows CT (MedSAM's window) and scales MR by Putz."""
        from samfast import preprocess

        if preset == "auto":
            modality = self.series.modality if self.series is not None else ""
            preset = "ct-medsam" if modality == "CT" else "putz"
        if preset == "none":
            return np.asarray(self.array(), dtype=np.float32)
        try:
            return preprocess.normalize(self.array(), preset)
        except ValueError as error:
            raise InputError(f"{self.path}: {error}") from None


def load_volume(path: str | Path) -> Volume:
    """Read a 3D volume file or a DICOM series folder (samfast.io.volumes.read_volume)."""
    image, series = read_volume(path, scalar_3d=True)
    return Volume(Path(path), image, series)


def check_mask_path(path: Path) -> None:
    """Refuse a mask path before any work is done: wrong suffix, missing folder."""
    if full_suffix(path).lower() not in VOLUME_SUFFIXES:
        raise InputError(f"{path}: a mask volume needs one of {', '.join(VOLUME_SUFFIXES)}")
    if not path.parent.is_dir():
        raise InputError(f"{path}: output folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name such as mask.nii.gz")


def write_volume_mask(mask: np.ndarray, volume: Volume, path: str | Path, description: str = "") -> Path:
    """Write a (z, y, x) mask as uint8 with the volume's size, spacing, origin and direction, atomically."""
    path = Path(path)
    mask = np.asarray(mask)
    if mask.shape != volume.shape:
        raise InputError(f"mask shape {mask.shape} does not match the volume {volume.shape}")
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(volume.image)
    if description:
        out.SetMetaData("ITK_FileNotes", description[:79])  # NIfTI descrip holds 80 characters
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(out, str(tmp), useCompression=True)
        except RuntimeError as error:
            raise InputError(
                f"{path}: cannot write the mask ({' '.join(str(error).split())[:160]})"
            ) from None
        check_written(tmp, path)
    return path
