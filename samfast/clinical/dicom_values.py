"""What every DICOM object samfast writes shares: value formats within their VR limits, the patient
and study attributes copied from the referenced series, series numbers, and the atomic save.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

from samfast import __version__
from samfast.errors import InputError
from samfast.io.atomic import atomic_path

MANUFACTURER = "samfast"
SOFTWARE_VERSIONS = __version__
# Value representations whose text is encoded with SpecificCharacterSet, the limits of those
# samfast's labels fill, and the sets whose default repertoire (G0, no escape) is ASCII.
TEXT_VRS = ("SH", "LO", "ST", "LT", "UT", "UC", "PN")
BYTE_LIMITS = {"SH": 16, "LO": 64}
ASCII_SETS = ("", "ISO_IR 6", "ISO 2022 IR 6")

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
    """``text`` cut at the last word boundary within ``limit`` characters (LO 64, SH 16, ST 1024).

    The standard counts characters, but readers such as dciodvfy count bytes, so the cut also keeps
    ``text`` within ``limit`` bytes of UTF-8, the widest character set samfast writes.
    """
    if len(text.encode("utf-8")) <= limit:
        return text
    cut = text[:limit]
    while len(cut.encode("utf-8")) > limit:
        cut = cut[:-1]
    whole_words = cut if text[len(cut)] == " " else cut.rpartition(" ")[0]
    return whole_words.rstrip() or cut


def copy_patient_and_study(dataset, source) -> None:
    """Patient and study attributes from an image of the referenced series onto ``dataset``."""
    for keyword in PATIENT_STUDY_TYPE2:
        setattr(dataset, keyword, getattr(source, keyword, ""))
    for keyword in PATIENT_STUDY_OPTIONAL:
        if keyword in source:
            element = source[keyword]
            if element.VR == "SQ":
                # decode the items' text while they still know the images' character set: the copy
                # is written in the derived object's set, which may differ
                for item in element.value:
                    list(item.iterall())
            dataset[keyword] = copy.deepcopy(element)
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


def set_character_set(dataset, source) -> None:
    """Give ``dataset`` the images' SpecificCharacterSet where it encodes every string ``dataset``
    holds (the ROI name, the patient name copied from the images, ...), else UTF-8 (ISO_IR 192).

    Call it once the dataset is complete: pydicom encodes each string with this set when it saves,
    and silently writes '?' for a character the set lacks.
    """
    images = source.get("SpecificCharacterSet")
    texts = [(element.VR, text) for element in dataset.iterall() for text in _texts(element)]
    if _holds(images, texts):
        if images:
            dataset.SpecificCharacterSet = images
        elif "SpecificCharacterSet" in dataset:
            del dataset.SpecificCharacterSet
    else:
        dataset.SpecificCharacterSet = "ISO_IR 192"


def _texts(element) -> list[str]:
    """The element's text as pydicom encodes it: a PN group by group (each group on its own, so
    ISO 2022 code extensions are reset at ^ and =), other text VRs value by value."""
    if element.VR not in TEXT_VRS or element.value is None:
        return []
    values = element.value if element.VM > 1 else [element.value]
    if element.VR == "PN":
        return [group for value in values for group in re.split(r"[=^]", str(value))]
    return [str(value) for value in values]


def _holds(character_set, texts: list[tuple[str, str]]) -> bool:
    """Whether every (VR, text) encodes in ``character_set``, decodes back to the same text, and
    stays within its VR's bytes wherever UTF-8 would (ISO 2022 escapes lengthen a label)."""
    from pydicom.charset import convert_encodings, decode_bytes, encode_string
    from pydicom.valuerep import TEXT_VR_DELIMS

    values = [character_set] if isinstance(character_set, str) else list(character_set or [])
    if len(values) <= 1 and (values or [""])[0] in ASCII_SETS:
        return all(text.isascii() for _, text in texts)
    with warnings.catch_warnings():
        # pydicom warns, then writes '?', where a character is missing from the set
        warnings.simplefilter("error")
        try:
            encodings = convert_encodings(values)
            if values[0] in ASCII_SETS and not all(_in_extensions(t, encodings[1:]) for _, t in texts):
                return False
            for vr, text in texts:
                encoded = encode_string(text, encodings)
                if decode_bytes(encoded, encodings, TEXT_VR_DELIMS) != text:
                    return False
                limit = BYTE_LIMITS.get(vr, len(encoded))
                if len(encoded) > limit >= len(text.encode("utf-8")):
                    return False
            return True
        except (Warning, UnicodeError, LookupError, ValueError):
            return False


def _in_extensions(text: str, encodings: list[str]) -> bool:
    """Whether each non-ASCII character is in one of the code extensions: pydicom encodes the
    default repertoire as Latin-1, which readers of an ISO 2022 set take as undefined bytes."""
    return all(any(_encodes(char, encoding) for encoding in encodings) for char in text if not char.isascii())


def _encodes(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
    except UnicodeError:
        return False
    return True


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
