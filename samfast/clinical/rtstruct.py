"""DICOM RT Structure Set out (and back in) for a mask on a DICOM series, built with pydicom.

Contours run along the voxel edges (samfast.clinical.contours), so a planning system's voxel-centre
rasterisation with XOR of nested contours gives back the mask exactly. Every Type 1 and 2 attribute
of the RT Structure Set IOD is written; patient and study come from the referenced series, whose
images (study, series, frame of reference, each SOP instance) the structure set references.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from pathlib import Path

import numpy as np

from samfast import __version__
from samfast.clinical.contours import mask_polygons, rasterise_xor
from samfast.clinical.dicom_values import (
    MANUFACTURER,
    SOFTWARE_VERSIONS,
    copy_patient_and_study,
    ds_text,
    fit,
    save_dataset,
    series_number,
    set_character_set,
)
from samfast.errors import InputError

DEFAULT_COLOR = (255, 0, 0)
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
# RT Referenced Study: Detached Study Management (retired, but what the RT IODs' examples and
# planning systems put there; no current class replaces it).
STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
SERIES_NUMBER = 901
# RTROIInterpretedType defined terms (PS3.3 C.8.8.8), the ones a contouring tool can mean.
ROI_TYPES = (
    "GTV",
    "CTV",
    "PTV",
    "ORGAN",
    "AVOIDANCE",
    "EXTERNAL",
    "CAVITY",
    "CONTROL",
    "MARKER",
    "SUPPORT",
    "FIXATION",
    "CONTRAST_AGENT",
)


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


# Unicode categories no DICOM string may hold: control characters, lone surrogates (no character
# set encodes them) and line or paragraph separators.
_NOT_IN_A_NAME = ("Cc", "Cs", "Zl", "Zp")


def check_roi_name(name: str) -> str:
    """The name, or one InputError line: it becomes ROIName, SegmentLabel and StructureSetName, Type 1
    LO values, so it is checked before any work rather than written empty or invalid."""
    if not name.strip():
        raise InputError(f"ROI name {name!r}: blank; give a name such as GTV")
    if name != name.strip(" "):  # LO's padding: readers drop them, and the name no longer matches
        raise InputError(f"ROI name {name!r}: DICOM does not keep leading or trailing spaces; remove them")
    bad = next((c for c in name if c == "\\" or unicodedata.category(c) in _NOT_IN_A_NAME), None)
    if bad is not None:  # a backslash separates DICOM values: the name would read back as two
        raise InputError(f"ROI name {name!r}: {bad!r} is not allowed (no backslash or control characters)")
    size = len(name.encode("utf-8"))
    if len(name) > 64 or size > 64:  # LO: 64 characters, and readers that count bytes see UTF-8's
        raise InputError(
            f"ROI name {name!r}: {len(name)} characters, {size} bytes in UTF-8; "
            "DICOM's LO holds 64 (shorten it)"
        )
    return name


def check_roi_type(roi_type: str) -> str:
    if roi_type not in ROI_TYPES:
        raise InputError(f"ROI type {roi_type!r}: use one of {', '.join(ROI_TYPES)}")
    return roi_type


def check_not_empty(mask: np.ndarray, allow_empty: bool) -> None:
    if not allow_empty and not np.asarray(mask).any():
        raise InputError(
            "the mask is empty: nothing to write (--allow-empty writes it anyway, the RTSTRUCT's ROI "
            "without contours)"
        )


def rtstruct_file_name(roi_name: str) -> str:
    return "RS_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", roi_name).strip("_") or "roi") + ".dcm"


def _plane_frame(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(ImagePositionPatient, row direction, column direction, row spacing, column spacing)."""
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    return (
        np.array([float(v) for v in ds.ImagePositionPatient]),
        orientation[:3],
        orientation[3:],
        row_mm,
        col_mm,
    )


def _contours_mm(plane: np.ndarray, ds) -> list[list[str]]:
    """A slice's polygons in patient mm, as DS strings: pixel (column x, row y) lies at
    ImagePositionPatient + x·(column spacing)·row direction + y·(row spacing)·column direction."""
    origin, row_dir, col_dir, row_mm, col_mm = _plane_frame(ds)
    out = []
    for pixels in mask_polygons(plane):
        points = origin + np.outer(pixels[:, 0] * col_mm, row_dir) + np.outer(pixels[:, 1] * row_mm, col_dir)
        out.append([ds_text(round(float(v), 6)) for v in points.ravel()])
    return out


def _item(**values):
    from pydicom.dataset import Dataset

    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def build_rtstruct(
    mask: np.ndarray,
    series,
    roi_name: str,
    color=DEFAULT_COLOR,
    description: str = "",
    roi_type: str = "GTV",
    model: str = "",
    allow_empty: bool = False,
):
    """An RT Structure Set holding one ROI for ``mask`` (z, y, x) on ``series`` (datasets in z order).

    ``model`` names the model in ROIGenerationDescription (the ROI is SEMIAUTOMATIC: a person's prompt,
    the model's mask); ``description`` (the full model and weights stamp) goes to StructureSetDescription.
    An empty mask is refused unless ``allow_empty``: then the ROI is listed without a ContourSequence
    (Type 3, left out rather than written empty).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    check_roi_name(roi_name)
    check_roi_type(roi_type)
    mask = np.asarray(mask, bool)
    first = series.datasets[0]
    if mask.shape != (len(series.datasets), first.Rows, first.Columns):
        raise InputError(f"mask shape {mask.shape} does not match the series")
    check_not_empty(mask, allow_empty)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("rtstruct", {}, file_meta=meta, preamble=b"\0" * 128)
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    copy_patient_and_study(ds, first)
    # RT Series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number(series, SERIES_NUMBER)
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = fit(f"samfast RTSTRUCT {roi_name}", 64)
    ds.OperatorsName = ""
    # Frame of Reference: the images' own
    frame = str(first.FrameOfReferenceUID)
    ds.FrameOfReferenceUID = frame
    ds.PositionReferenceIndicator = getattr(first, "PositionReferenceIndicator", "")
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "samfast segment"
    ds.SoftwareVersions = SOFTWARE_VERSIONS
    # Structure Set
    # SH holds 16 characters: a longer name is cut at a word boundary; ROIName and StructureSetName
    # (LO) keep it whole
    ds.StructureSetLabel = fit(roi_name, 16)
    ds.StructureSetName = roi_name
    if description:
        ds.StructureSetDescription = fit(description, 1024)
    ds.InstanceNumber = 1
    ds.StructureSetDate, ds.StructureSetTime = date, time
    images = Sequence(
        _item(ReferencedSOPClassUID=d.SOPClassUID, ReferencedSOPInstanceUID=d.SOPInstanceUID)
        for d in series.datasets
    )
    referenced_series = _item(SeriesInstanceUID=first.SeriesInstanceUID, ContourImageSequence=images)
    study = _item(
        ReferencedSOPClassUID=STUDY_SOP_CLASS,
        ReferencedSOPInstanceUID=first.StudyInstanceUID,
        RTReferencedSeriesSequence=Sequence([referenced_series]),
    )
    ds.ReferencedFrameOfReferenceSequence = Sequence(
        [_item(FrameOfReferenceUID=frame, RTReferencedStudySequence=Sequence([study]))]
    )
    ds.StructureSetROISequence = Sequence(
        [
            _item(
                ROINumber=1,
                ReferencedFrameOfReferenceUID=frame,
                ROIName=roi_name,
                ROIGenerationAlgorithm="SEMIAUTOMATIC",
                ROIGenerationDescription=fit(f"{model or 'model'} prompted in samfast {__version__}", 64),
            )
        ]
    )
    # ROI Contour: one CLOSED_PLANAR contour per polygon, on the image it lies in
    contour = _item(ReferencedROINumber=1, ROIDisplayColor=[int(v) for v in color])
    polygons = [
        (d, points)
        for d, plane in zip(series.datasets, mask, strict=True)
        if plane.any()
        for points in _contours_mm(plane, d)
    ]
    if polygons:
        contour.ContourSequence = Sequence(
            _item(
                ContourNumber=number,
                ContourImageSequence=Sequence(
                    [_item(ReferencedSOPClassUID=d.SOPClassUID, ReferencedSOPInstanceUID=d.SOPInstanceUID)]
                ),
                ContourGeometricType="CLOSED_PLANAR",
                NumberOfContourPoints=len(points) // 3,
                ContourData=points,
            )
            for number, (d, points) in enumerate(polygons, start=1)
        )
    ds.ROIContourSequence = Sequence([contour])
    ds.RTROIObservationsSequence = Sequence(
        [_item(ObservationNumber=1, ReferencedROINumber=1, RTROIInterpretedType=roi_type, ROIInterpreter="")]
    )
    # Approval: an automatic contour waits for a clinician's approval
    ds.ApprovalStatus = "UNAPPROVED"
    set_character_set(ds, first)
    return ds


def write_rtstruct(
    mask: np.ndarray,
    series,
    out_dir: str | Path,
    roi_name: str,
    color=DEFAULT_COLOR,
    description: str = "",
    **options,
) -> Path:
    """Write ``out_dir/RS_<roi>.dcm`` atomically (the folder is made if its parent exists, and
    removed again if the write fails). ``options`` go to build_rtstruct."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: --rtstruct needs a folder, this is a file")
    if not out_dir.parent.is_dir():
        raise InputError(f"{out_dir}: parent folder {out_dir.parent} does not exist")
    dataset = build_rtstruct(mask, series, roi_name, color, description, **options)
    made = not out_dir.exists()
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise InputError(f"{out_dir}: cannot make the folder ({error.strerror})") from None
    try:
        return save_dataset(
            lambda tmp: dataset.save_as(tmp, enforce_file_format=True), out_dir / rtstruct_file_name(roi_name)
        )
    except BaseException:
        if made:
            out_dir.rmdir()
        raise


def read_rtstruct_mask(path: str | Path, series, roi_name: str) -> np.ndarray:
    """Rasterise one ROI of an RT Structure Set on ``series`` as planning systems do: a voxel is in
    when its centre lies inside an odd number of its slice's contours. A (z, y, x) bool mask."""
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
        polygons.setdefault(z, []).append(
            np.stack([points @ row_dir / col_mm, points @ col_dir / row_mm], axis=1)
        )
    mask = np.zeros((len(series.datasets), rows, columns), dtype=bool)
    for z, shapes in polygons.items():
        mask[z] = rasterise_xor(shapes, (rows, columns))
    return mask
