"""Read one DICOM image series from a folder, refusing what would give a wrong geometry.

Every image file (one with Rows and Columns) counts: two series, two frames of reference, a file
without position or orientation, missing slices, uneven spacing, mixed orientations or slices that
do not lie along the slice normal (gantry tilt, shear) end in one clear InputError line, from the
headers alone. The volume itself is then read by SimpleITK (GDCM) from the checked, sorted file list.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samfast.errors import InputError

# Relative tolerance on slice gaps: scanners round positions to ~1e-3 mm; 1 % is still exact enough
# for rasterising contours and far below a missing slice (100 %).
GAP_TOLERANCE = 0.01
# Tilt tolerance, in pixels: the NIfTI places slice k on the line through the first slice along the
# normal, the RTSTRUCT and SEG at slice k's own position. Within a tenth of a pixel they agree; the
# rounding of written positions (a few 1e-3 mm, only on oblique series) stays far below it, and over
# a 300 mm stack of 0.5 mm pixels it is 0.01 degrees.
TILT_TOLERANCE_PIXELS = 0.1
# Objects with Rows/Columns that are not slices of an image series: a DICOM-SEG written next to its
# series must not turn the folder into two series.
NOT_SLICES = {"1.2.840.10008.5.1.4.1.1.66.4"}  # Segmentation Storage


@dataclasses.dataclass
class DicomSeries:
    """A checked series: datasets (with pixel data) sorted as the volume's z axis, and its folder."""

    folder: Path
    datasets: list  # pydicom Dataset, index = volume z
    files: list[Path]

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def modality(self) -> str:
        return str(getattr(self.datasets[0], "Modality", ""))


def image_headers(files: Iterable[Path]) -> list[tuple[Path, object]]:
    """(path, header) of each image file, sorted by path; pixels are not read. Files that are not
    DICOM (a README), a DICOMDIR and other objects without Rows/Columns are left out, as viewers do."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    found = []
    for path in sorted(files):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        # stop_before_pixels drops PixelData itself; Rows/Columns (Image Pixel module) mark an image.
        if "Rows" in ds and "Columns" in ds and str(ds.get("SOPClassUID", "")) not in NOT_SLICES:
            found.append((path, ds))
    return found


def by_series(headers: list) -> dict[str, list]:
    """Image headers grouped by SeriesInstanceUID ('?' where it is missing)."""
    groups: dict[str, list] = {}
    for path, ds in headers:
        groups.setdefault(str(getattr(ds, "SeriesInstanceUID", "?")), []).append((path, ds))
    return groups


def _one_series(folder: Path, headers: list) -> list:
    groups = by_series(headers)
    if not groups:
        raise InputError(f"{folder}: no DICOM images found")
    if len(groups) > 1:
        counts = ", ".join(f"{uid} ({len(v)} files)" for uid, v in sorted(groups.items()))
        raise InputError(f"{folder}: holds {len(groups)} DICOM series, give a folder with one: {counts}")
    return next(iter(groups.values()))


def _vector(folder: Path, ds, name: str, length: int, path: Path) -> np.ndarray:
    try:
        values = np.array([float(v) for v in ds[name].value], dtype=float)
    except (KeyError, TypeError, ValueError):
        values = np.zeros(0)
    if values.shape != (length,) or not np.isfinite(values).all():
        raise InputError(
            f"{folder}: {path.name} has no valid {name}; every image of a 3D series needs its "
            "position and orientation"
        )
    return values


def _geometry(folder: Path, entries: list) -> tuple[np.ndarray, np.ndarray]:
    """(positions (n, 3), orientations (n, 6)) of every file; a file without them is named."""
    positions = [_vector(folder, ds, "ImagePositionPatient", 3, path) for path, ds in entries]
    orientations = [_vector(folder, ds, "ImageOrientationPatient", 6, path) for path, ds in entries]
    return np.array(positions), np.array(orientations)


def _one_frame_of_reference(folder: Path, entries: list) -> None:
    """Positions in two frames of reference are not one coordinate system; none at all is allowed
    here (a NIfTI needs none), an RTSTRUCT/SEG then is refused by samfast.clinical.references."""
    counts: dict[str, int] = {}
    for _, ds in entries:
        uid = str(ds.get("FrameOfReferenceUID", "") or "") or "none"
        counts[uid] = counts.get(uid, 0) + 1
    if len(counts) > 1:
        listed = ", ".join(f"{uid} ({n} files)" for uid, n in sorted(counts.items()))
        raise InputError(f"{folder}: slices in {len(counts)} frames of reference ({listed}); give one series")


def _pixel_size(ds) -> float:
    try:
        return min(float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        return 1.0  # what SimpleITK assumes without PixelSpacing


def _check_not_tilted(folder: Path, positions: np.ndarray, normal: np.ndarray, pixel: float) -> None:
    """Refuse slices that do not lie along the normal (gantry tilt, shear): the NIfTI would stack
    them straight and disagree with the RTSTRUCT and SEG by the tilt's sideways offset."""
    offsets = positions - positions[0]
    along = offsets @ normal
    sideways = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
    worst = int(np.argmax(sideways))
    if sideways[worst] <= TILT_TOLERANCE_PIXELS * pixel:
        return
    degrees = math.degrees(math.atan2(sideways[worst], abs(along[worst])))
    shown = f"{degrees:.1f}" if degrees >= 0.1 else f"{degrees:.2g}"
    raise InputError(
        f"{folder}: series is gantry-tilted by {shown}° (slice positions do not lie along the slice "
        "normal); resample it onto a regular grid first"
    )


def check_stack(folder: Path, entries: list) -> list:
    """Sort one series' (path, header) entries along the slice normal; refuse anything but one
    frame of reference, one orientation and size, and evenly spaced slices along the normal."""
    positions, orientations = _geometry(folder, entries)
    _one_frame_of_reference(folder, entries)
    first = entries[0][1]
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    for (path, ds), orientation in zip(entries, orientations, strict=True):
        if not np.allclose(np.cross(orientation[:3], orientation[3:]), normal, atol=1e-4):
            raise InputError(f"{folder}: slices have different orientations ({path.name})")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InputError(f"{folder}: slices have different sizes ({path.name})")
    if len(entries) < 2:
        raise InputError(f"{folder}: a single DICOM slice is not a volume")
    order = np.argsort(positions @ normal, kind="stable")
    entries, positions = [entries[i] for i in order], positions[order]
    gaps = np.diff(positions @ normal)
    if (gaps < 1e-6).any():
        raise InputError(f"{folder}: two slices share one position; duplicated or mixed acquisitions")
    _check_not_tilted(folder, positions, normal, _pixel_size(first))
    step = float(np.median(gaps))
    if np.abs(gaps - step).max() > GAP_TOLERANCE * step:
        worst = int(np.argmax(np.abs(gaps - step)))
        ratio = gaps[worst] / step
        if abs(ratio - round(ratio)) <= GAP_TOLERANCE and round(ratio) >= 2:
            raise InputError(
                f"{folder}: {round(ratio) - 1} slice(s) missing after {entries[worst][0].name} "
                f"(gap {gaps[worst]:.3f} mm, spacing {step:.3f} mm)"
            )
        raise InputError(
            f"{folder}: uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm); "
            "resample to a regular grid first"
        )
    return entries


def checked_stack(folder: str | Path) -> list:
    """The (path, header) entries of the folder's one series in volume z order, checked, no pixels read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = (p for p in folder.rglob("*") if p.is_file())
    return check_stack(folder, _one_series(folder, image_headers(files)))


def read_dicom_series(folder: str | Path) -> tuple[sitk.Image, DicomSeries]:
    """(volume with the series geometry, checked series) for a folder holding one image series."""
    import pydicom

    folder = Path(folder)
    files = [path for path, _ in checked_stack(folder)]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in files])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(
            f"{folder}: cannot read the series pixels ({' '.join(str(error).split())[:160]})"
        ) from None
    datasets = [pydicom.dcmread(path) for path in files]
    return image, DicomSeries(folder, datasets, files)
