"""Read one DICOM image series from a folder, refusing what would give a wrong geometry.

Two series in one folder, missing slices, uneven spacing or mixed orientations end in one clear
InputError line; the volume itself is read by SimpleITK (GDCM) from the checked, sorted file list.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samfast.errors import InputError

# Relative tolerance on slice gaps: scanners round positions to ~1e-3 mm; 1 % is still exact enough
# for rasterising contours and far below a missing slice (100 %).
GAP_TOLERANCE = 0.01


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


def _read_headers(folder: Path) -> list[tuple[Path, object]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue  # not DICOM (a README, a thumbnail): ignored, as every viewer does
        if "PixelData" in ds or "ImagePositionPatient" in ds:
            found.append((path, ds))
    return found


def _one_series(folder: Path, headers: list) -> list:
    by_series: dict[str, list] = {}
    for path, ds in headers:
        by_series.setdefault(str(getattr(ds, "SeriesInstanceUID", "?")), []).append((path, ds))
    if not by_series:
        raise InputError(f"{folder}: no DICOM images found")
    if len(by_series) > 1:
        counts = ", ".join(f"{uid} ({len(v)} files)" for uid, v in sorted(by_series.items()))
        raise InputError(f"{folder}: holds {len(by_series)} DICOM series, give a folder with one: {counts}")
    return next(iter(by_series.values()))


def _normal(ds, path: Path) -> np.ndarray:
    try:
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        np.array([float(v) for v in ds.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        raise InputError(
            f"{path}: no ImagePositionPatient/ImageOrientationPatient; not a 3D series"
        ) from None
    return np.cross(orientation[:3], orientation[3:])


def _check_stack(folder: Path, entries: list) -> list:
    """Sort by position along the slice normal; refuse gaps, duplicates and mixed geometry."""
    first_path, first = entries[0]
    normal = _normal(first, first_path)
    for path, ds in entries:
        if not np.allclose(_normal(ds, path), normal, atol=1e-4):
            raise InputError(f"{folder}: slices have different orientations ({path.name})")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InputError(f"{folder}: slices have different sizes ({path.name})")
    entries = sorted(
        entries, key=lambda e: float(np.dot(normal, [float(v) for v in e[1].ImagePositionPatient]))
    )
    if len(entries) < 2:
        raise InputError(f"{folder}: a single DICOM slice is not a volume")
    positions = np.array([np.dot(normal, [float(v) for v in ds.ImagePositionPatient]) for _, ds in entries])
    gaps = np.diff(positions)
    if (gaps < 1e-6).any():
        raise InputError(f"{folder}: two slices share one position; duplicated or mixed acquisitions")
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


def read_dicom_series(folder: str | Path) -> tuple[sitk.Image, DicomSeries]:
    """(volume with the series geometry, checked series) for a folder holding one image series."""
    import pydicom

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    entries = _check_stack(folder, _one_series(folder, _read_headers(folder)))
    files = [path for path, _ in entries]
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
