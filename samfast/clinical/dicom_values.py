"""What every DICOM object samfast writes shares: value formats within their VR limits, the patient
and study attributes copied from the referenced series, series numbers, and the atomic save.
"""

from __future__ import annotations

from pathlib import Path

from samfast import __version__
from samfast.errors import InputError
from samfast.io.atomic import atomic_path

MANUFACTURER = "samfast"
SOFTWARE_VERSIONS = __version__

# Patient and General Study modules (Type 2 unless noted): copied from the images, empty when absent,
# so the derived object files into the same patient and study in a planning system or PACS.
PATIENT_STUDY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
PATIENT_STUDY_OPTIONAL = (
    "IssuerOfPatientID",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyDescription",
    "IssuerOfAccessionNumberSequence",
)


def ds_text(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) that reads back as ``value`` or very near it."""
    for digits in range(12, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value} does not fit a DICOM decimal string")


def fit(text: str, limit: int) -> str:
    """``text`` cut at the last word boundary within ``limit`` characters (LO 64, SH 16)."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut if cut else text[:limit]


def copy_patient_and_study(dataset, source) -> None:
    """Patient and study attributes from an image of the referenced series onto ``dataset``."""
    for keyword in PATIENT_STUDY_TYPE2:
        setattr(dataset, keyword, getattr(source, keyword, ""))
    for keyword in PATIENT_STUDY_OPTIONAL:
        if keyword in source:
            dataset[keyword] = source[keyword]
    dataset.StudyInstanceUID = source.StudyInstanceUID


def series_number(series, preferred: int) -> int:
    """``preferred`` (900 SEG, 901 RTSTRUCT), moved by 1000 while it is the image series' own."""
    taken = set()
    for ds in series.datasets:
        try:
            taken.add(int(str(getattr(ds, "SeriesNumber", "")).strip()))
        except ValueError:  # absent (Type 2) or malformed: nothing to avoid
            pass
    number = preferred
    while number in taken:
        number += 1000
    return number


def character_set(source, *texts: str) -> str | None:
    """The images' SpecificCharacterSet, or UTF-8 (ISO_IR 192) when samfast's own text needs it."""
    if all(text.isascii() for text in texts):
        return getattr(source, "SpecificCharacterSet", None)
    return "ISO_IR 192"


def save_dataset(save, target: Path) -> Path:
    """Write through ``save(tmp_path)`` atomically; a full disk or a refused write is one InputError."""
    with atomic_path(target) as tmp:
        try:
            save(str(tmp))
        except OSError as error:
            raise InputError(
                f"{target}: cannot write ({' '.join(str(error.strerror or error).split())})"
            ) from None
    return target
