"""Dataset readers: BraTS 2020/2021/2023 case folders and generic image/label pairs (folders or a CSV).

Readers only find files and check they pair up; pixels are read when a case is evaluated. A case that
cannot be used (a missing modality, no label) is returned as skipped with its reason, never raised:
one bad case must not stop a run over hundreds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samfast.errors import InputError
from samfast.io.volumes import VOLUME_SUFFIXES as IMAGE_SUFFIXES

# BraTS 2020/2021 label the enhancing tumour 4; BraTS 2023 renumbered it 3.
TARGETS: dict[str, dict[str, tuple[int, ...]]] = {
    "brats": {"tc": (1, 4), "wt": (1, 2, 4), "et": (4,)},
    "brats2023": {"tc": (1, 3), "wt": (1, 2, 3), "et": (3,)},
}
# BraTS 2023 renamed the sequences; users may name either.
MODALITY_2023 = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path
    label: Path
    grade: str | None = None
    convention: str = "brats"  # label numbering: "brats", "brats2023" or "generic"


@dataclass(frozen=True)
class Skipped:
    case_id: str
    reason: str


def target_labels(target: str, convention: str = "brats") -> tuple[int, ...] | None:
    """Label values of ``target``: tc / wt / et (numbering per convention), "nonzero", or "1,4".

    None means every non-zero label.
    """
    if target == "nonzero":
        return None
    named = TARGETS.get(convention, {})
    if target in named:
        return named[target]
    try:
        labels = tuple(int(v) for v in target.split(","))
    except ValueError:
        labels = ()
    if not labels:
        hint = "tc, wt, et, nonzero" if convention != "generic" else "nonzero"
        raise InputError(f"target {target!r}: use {hint} or label values such as 1,4")
    return labels


def target_mask(values: np.ndarray, target: str, convention: str = "brats") -> np.ndarray:
    """Boolean mask of ``target`` in a label array (any non-zero label for "nonzero")."""
    labels = target_labels(target, convention)
    return np.asarray(values) != 0 if labels is None else np.isin(values, labels)


def _grades(root: Path) -> dict[str, str]:
    """Grade (HGG/LGG) per case from BraTS 2020's name_mapping.csv, when it is there."""
    mapping = root / "name_mapping.csv"
    if not mapping.is_file():
        return {}
    with mapping.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    id_key = next((k for k in (rows[0] if rows else {}) if "subject_id" in k.lower()), None)
    if id_key is None or "Grade" not in rows[0]:
        return {}
    return {row[id_key]: row["Grade"] for row in rows}


def _brats_files(folder: Path, modality: str) -> tuple[Path, Path, str] | None:
    """(image, label, convention) of one case folder, or None if it follows neither naming."""
    name = folder.name
    legacy = (folder / f"{name}_{modality}.nii.gz", folder / f"{name}_seg.nii.gz", "brats")
    modern = (
        folder / f"{name}-{MODALITY_2023.get(modality, modality)}.nii.gz",
        folder / f"{name}-seg.nii.gz",
        "brats2023",
    )
    for image, label, convention in (legacy, modern):
        if image.is_file() or label.is_file():
            return image, label, convention
    return None


def find_brats_cases(root: str | Path, modality: str = "t1ce") -> tuple[list[Case], list[Skipped]]:
    """Cases laid out as BraTS 2020/2021 (``<case>/<case>_t1ce.nii.gz`` + ``_seg``) or BraTS 2023
    (``<case>/<case>-t1c.nii.gz`` + ``-seg``). Folders with only one of the two files are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such data folder")
    grades = _grades(root)
    cases, skipped = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        found = _brats_files(folder, modality)
        if found is None:
            if any(folder.glob("*.nii*")):
                skipped.append(Skipped(folder.name, f"no {modality} image and no seg label"))
            continue
        image, label, convention = found
        if not image.is_file():
            skipped.append(Skipped(folder.name, f"missing modality: no {image.name}"))
        elif not label.is_file():
            skipped.append(Skipped(folder.name, f"no label: no {label.name}"))
        else:
            cases.append(Case(folder.name, image, label, grades.get(folder.name), convention))
    if not cases and not skipped:
        raise InputError(
            f"{root}: no BraTS cases (<case>/<case>_{modality}.nii.gz + _seg.nii.gz, or the 2023 "
            "<case>-t1c.nii.gz + -seg.nii.gz naming)"
        )
    return cases, skipped


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name  # a DICOM series folder


def _entries(folder: Path) -> dict[str, Path]:
    return {
        _stem(p): p for p in sorted(folder.iterdir()) if p.is_dir() or p.name.lower().endswith(IMAGE_SUFFIXES)
    }


def find_pairs(images: str | Path, labels: str | Path) -> tuple[list[Case], list[Skipped]]:
    """Image/label pairs from two folders, matched by name (``x.nii.gz`` ↔ ``x.nii.gz`` or
    ``x_seg``/``x_label``/``x_mask``). Entries may be files or DICOM series folders."""
    images, labels = Path(images), Path(labels)
    for folder in (images, labels):
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder")
    label_entries = _entries(labels)
    cases, skipped = [], []
    for stem, image in _entries(images).items():
        candidates = [f"{stem}{tail}" for tail in ("", "_seg", "_label", "_mask", "-seg", "-label")]
        label = next((label_entries[c] for c in candidates if c in label_entries), None)
        if label is None:
            skipped.append(Skipped(stem, f"no label for {image.name} in {labels}"))
        else:
            cases.append(Case(stem, image, label, None, "generic"))
    if not cases and not skipped:
        raise InputError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)} or DICOM series folders)")
    return cases, skipped


def read_pairs_csv(path: str | Path) -> tuple[list[Case], list[Skipped]]:
    """Pairs from a CSV with columns image, label and optionally case, grade (paths relative to it).

    A malformed line (too few or too many fields, an empty path, bad quoting) is refused with its
    line number: a CSV is written by hand, and a silently dropped case skews a whole evaluation.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such CSV file")
    cases, skipped = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if not {"image", "label"} <= set(columns):
                raise InputError(f"{path}: needs a header with columns image,label (optional: case,grade)")
            for row in reader:
                number = reader.line_num
                extra, short = row.pop(None, None) or [], sum(v is None for v in row.values())
                if extra or short:
                    fields = len(columns) + len(extra) - short
                    raise InputError(f"{path}: line {number}: {fields} fields, the header has {len(columns)}")
                if not row["image"].strip() or not row["label"].strip():
                    raise InputError(f"{path}: line {number}: empty image or label")
                image, label = (path.parent / row["image"]), (path.parent / row["label"])
                case_id = row.get("case") or _stem(image)
                missing = [p for p in (image, label) if not p.exists()]
                if missing:
                    skipped.append(Skipped(case_id, f"line {number}: {missing[0]} does not exist"))
                else:
                    cases.append(Case(case_id, image, label, row.get("grade") or None, "generic"))
    except csv.Error as error:
        raise InputError(f"{path}: line {reader.line_num}: {error}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    if not cases and not skipped:
        raise InputError(f"{path}: no rows after the header")
    return cases, skipped


def load_case(case: Case, target: str = "tc") -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(image z,y,x float32, target mask z,y,x bool, spacing x,y,z mm) after checking the grids agree.

    Raises InputError for anything that makes the case unusable, including an empty target.
    """
    # Finding cases needs no SimpleITK; reading them does (it is absent from a bare GPU machine).
    import SimpleITK as sitk

    from samfast.io import check_same_grid
    from samfast.io.volumes import read_volume

    image, label = read_volume(case.image)[0], read_volume(case.label)[0]
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{case.case_id}: image must be a 3D scalar volume")
    check_same_grid(image, label, name=f"{case.case_id} label")
    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    if not np.isfinite(volume).all():
        raise InputError(f"{case.case_id}: image contains NaN or infinite values")
    values = sitk.GetArrayFromImage(label)
    mask = target_mask(values, target, case.convention)
    if not mask.any():
        present = ", ".join(str(v) for v in np.unique(values)[:8])
        raise InputError(f"{case.case_id}: no target voxels (target {target}; labels present: {present})")
    return volume, mask, tuple(image.GetSpacing())
