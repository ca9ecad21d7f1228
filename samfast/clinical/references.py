"""What an RT Structure Set or a DICOM-SEG needs from the series it references, checked before the
model runs: both files name the series' frame of reference, study, series and every image instance,
so a series without them (SimpleITK's own series writer sets no FrameOfReferenceUID) can still be
segmented to NIfTI, but not to RTSTRUCT or SEG.
"""

from __future__ import annotations

from samfast.errors import InputError

#: Attributes every image must carry, one value for the whole series, and one per image.
SHARED = ("FrameOfReferenceUID", "StudyInstanceUID", "SeriesInstanceUID")
PER_IMAGE = ("SOPClassUID", "SOPInstanceUID")


def _value(ds, name: str) -> str:
    return str(ds.get(name, "") or "").strip()


def check_references(series, outputs: str) -> None:
    """Refuse, in one line naming ``outputs`` ('--rtstruct/--seg', 'RTSTRUCT export'), a series whose
    images lack what a derived object must reference."""
    datasets = series.datasets
    missing = [name for name in (*SHARED, *PER_IMAGE) if any(not _value(ds, name) for ds in datasets)]
    if missing:
        raise InputError(
            f"{outputs} cannot reference this series: its images have no {', '.join(missing)}; "
            "only the NIfTI mask can be written"
        )
    for name in SHARED:
        values = {_value(ds, name) for ds in datasets}
        if len(values) > 1:
            raise InputError(f"{outputs} cannot reference this series: its images have {len(values)} {name}s")
    if len({_value(ds, "SOPInstanceUID") for ds in datasets}) < len(datasets):
        raise InputError(f"{outputs} cannot reference this series: two images share one SOPInstanceUID")
