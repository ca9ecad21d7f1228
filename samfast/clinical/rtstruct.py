"""DICOM RT Structure Set out (and back in) for a mask on a DICOM series, through rt-utils.

The structure set references every image of the source series (study, series, frame of reference,
SOP instances), so a planning system attaches it to the right scan. Written atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from samfast import __version__
from samfast.errors import InputError
from samfast.io.atomic import atomic_path

DEFAULT_COLOR = (255, 0, 0)


def parse_color(text: str) -> tuple[int, int, int]:
    """'255,0,0' or '#ff0000' -> (255, 0, 0)."""
    text = text.strip()
    try:
        if text.startswith("#") and len(text) == 7:
            rgb = tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))
        else:
            rgb = tuple(int(v) for v in text.split(","))
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError
    except ValueError:
        raise InputError(f"colour {text!r}: expected R,G,B (0-255) such as 255,0,0 or #ff0000") from None
    return rgb  # type: ignore[return-value]


def check_roi_name(name: str) -> str:
    # ROIName is a DICOM LO: at most 64 characters, no backslash or control characters.
    if not name or len(name) > 64 or re.search(r"[\\\x00-\x1f]", name):
        raise InputError(f"ROI name {name!r}: need 1-64 printable characters without a backslash")
    return name


def rtstruct_file_name(roi_name: str) -> str:
    return "RS_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", roi_name).strip("_") or "roi") + ".dcm"


def _contours(plane: np.ndarray, ds) -> list[list[float]]:
    """Closed contours of one slice's mask through its boundary pixel centres, in patient mm.

    Pixel (column c, row r) lies at ImagePositionPatient + c·Δcol·row_dir + r·Δrow·col_dir; rt-utils
    scales by the two PixelSpacing values the other way round, which is wrong for non-square pixels.
    """
    import cv2

    origin, row_dir, col_dir, row_mm, col_mm = _plane_frame(ds)
    found, _ = cv2.findContours(plane.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    out = []
    for contour in found:
        pixels = contour.reshape(-1, 2).astype(np.float64)
        points = origin + np.outer(pixels[:, 0] * col_mm, row_dir) + np.outer(pixels[:, 1] * row_mm, col_dir)
        out.append([round(float(v), 4) for v in points.ravel()])
    return out


def _quietly(function, *args):
    """Call ``function`` without pydicom's deprecation notices: rt-utils sets is_little_endian and
    is_implicit_VR, which pydicom 3 deprecates; the file written is the same (the transfer syntax decides)."""
    import logging
    import warnings

    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return function(*args)
    finally:
        logger.setLevel(level)


def build_rtstruct(mask: np.ndarray, series, roi_name: str, color=DEFAULT_COLOR, description: str = ""):
    """An RT Structure Set dataset holding one ROI for ``mask`` (z, y, x) on ``series`` (z order).

    rt-utils builds the references (patient, study, series, frame of reference, every image) and the
    ROI records; the contour coordinates are computed here (see _contours).
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from rt_utils import ds_helper
    from rt_utils.utils import ROIData

    check_roi_name(roi_name)
    mask = np.asarray(mask, bool)
    first = series.datasets[0]
    if mask.shape != (len(series.datasets), first.Rows, first.Columns):
        raise InputError(f"mask shape {mask.shape} does not match the series")
    dataset = _quietly(ds_helper.create_rtstruct_dataset, series.datasets)
    dataset.Manufacturer = "samfast"
    dataset.SoftwareVersions = __version__
    dataset.StructureSetLabel = roi_name[:16]
    dataset.SeriesDescription = (description or f"samfast {roi_name}")[:64]
    frame = dataset.ReferencedFrameOfReferenceSequence[-1].FrameOfReferenceUID
    roi = ROIData(mask, list(color), 1, roi_name, frame, description, False, False, "AUTOMATIC")
    contour = Dataset()
    contour.ROIDisplayColor = roi.color
    contour.ContourSequence = Sequence(
        ds_helper.create_contour(ds, points)
        for ds, plane in zip(series.datasets, mask, strict=True)
        if plane.any()
        for points in _contours(plane, ds)
    )
    contour.ReferencedROINumber = 1
    dataset.ROIContourSequence.append(contour)
    dataset.StructureSetROISequence.append(ds_helper.create_structure_set_roi(roi))
    dataset.RTROIObservationsSequence.append(ds_helper.create_rtroi_observation(roi))
    return dataset


def write_rtstruct(
    mask: np.ndarray, series, out_dir: str | Path, roi_name: str, color=DEFAULT_COLOR, description: str = ""
) -> Path:
    """Write ``out_dir/RS_<roi>.dcm`` atomically (the folder is made if its parent exists)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: --rtstruct needs a folder, this is a file")
    if not out_dir.parent.is_dir():
        raise InputError(f"{out_dir}: parent folder {out_dir.parent} does not exist")
    dataset = build_rtstruct(mask, series, roi_name, color, description)
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise InputError(f"{out_dir}: cannot make the folder ({error.strerror})") from None
    target = out_dir / rtstruct_file_name(roi_name)
    with atomic_path(target) as tmp:
        dataset.save_as(str(tmp), enforce_file_format=True)
    return target


def _plane_frame(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    return (
        np.array([float(v) for v in ds.ImagePositionPatient]),
        orientation[:3],
        orientation[3:],
        row_mm,
        col_mm,
    )


def read_rtstruct_mask(path: str | Path, series, roi_name: str) -> np.ndarray:
    """Re-rasterise one ROI of an RT Structure Set on ``series``: a (z, y, x) bool mask.

    Filled as rt-utils fills (OpenCV fillPoly of all of a slice's contours at rounded pixel
    positions), but on a rows × columns grid: rt-utils' own reader swaps them on non-square images.
    """
    import cv2
    import pydicom

    structure = pydicom.dcmread(path)
    numbers = [int(r.ROINumber) for r in structure.StructureSetROISequence if r.ROIName == roi_name]
    if not numbers:
        raise InputError(f"{path}: no ROI named {roi_name!r}")
    contours = next(
        (c for c in structure.ROIContourSequence if int(c.ReferencedROINumber) == numbers[0]), None
    )
    index = {str(ds.SOPInstanceUID): z for z, ds in enumerate(series.datasets)}
    rows, columns = int(series.datasets[0].Rows), int(series.datasets[0].Columns)
    polygons: dict[int, list[np.ndarray]] = {}
    for contour in getattr(contours, "ContourSequence", None) or []:
        z = index.get(str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID))
        if z is None:
            raise InputError(f"{path}: a contour references an image outside this series")
        origin, row_dir, col_dir, row_mm, col_mm = _plane_frame(series.datasets[z])
        points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3) - origin
        pixels = np.stack([points @ row_dir / col_mm, points @ col_dir / row_mm], axis=1)
        polygons.setdefault(z, []).append(np.round(pixels).astype(np.int32))
    mask = np.zeros((len(series.datasets), rows, columns), dtype=np.uint8)
    for z, shapes in polygons.items():
        cv2.fillPoly(mask[z], shapes, 1)
    return mask.astype(bool)
