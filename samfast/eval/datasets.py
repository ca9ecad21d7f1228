"""Dataset readers: BraTS-layout case folders (image + label per case, grade from name_mapping.csv).

Readers only find files and check they pair up; pixels are read when a case is evaluated.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samfast.errors import InputError
from samfast.io import check_same_grid, read_image

TARGETS: dict[str, tuple[int, ...]] = {"tc": (1, 4), "wt": (1, 2, 4), "et": (4,)}


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path
    label: Path
    grade: str | None = None


def target_labels(target: str) -> tuple[int, ...]:
    """tc (tumour core, 1|4), wt (1|2|4), et (4) or explicit labels such as "1,4"."""
    if target in TARGETS:
        return TARGETS[target]
    try:
        return tuple(int(v) for v in target.split(","))
    except ValueError:
        raise InputError(f"target {target!r}: use tc, wt, et or labels such as 1,4") from None


def _grades(root: Path) -> dict[str, str]:
    mapping = root / "name_mapping.csv"
    if not mapping.is_file():
        return {}
    with mapping.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    id_key = next((k for k in (rows[0] if rows else {}) if "subject_id" in k.lower()), None)
    if id_key is None or "Grade" not in rows[0]:
        return {}
    return {row[id_key]: row["Grade"] for row in rows}


def find_brats_cases(root: str | Path, modality: str = "t1ce") -> list[Case]:
    """Cases laid out as ``<root>/<case>/<case>_<modality>.nii.gz`` and ``<case>_seg.nii.gz``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such data folder")
    grades = _grades(root)
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        image = folder / f"{folder.name}_{modality}.nii.gz"
        label = folder / f"{folder.name}_seg.nii.gz"
        if image.is_file() and label.is_file():
            cases.append(Case(folder.name, image, label, grades.get(folder.name)))
        elif image.is_file() or label.is_file():
            raise InputError(f"{folder}: has {'no label' if image.is_file() else 'no ' + modality} file")
    if not cases:
        raise InputError(f"{root}: no BraTS cases (<case>/<case>_{modality}.nii.gz + _seg.nii.gz)")
    return cases


def load_case(case: Case, target: str = "tc") -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(image z,y,x float32, target mask z,y,x bool, spacing x,y,z mm) after checking the grids agree."""
    image, label = read_image(case.image), read_image(case.label)
    check_same_grid(image, label, name=f"{case.case_id} label")
    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    if not np.isfinite(volume).all():
        raise InputError(f"{case.case_id}: image contains NaN or infinite values")
    mask = np.isin(sitk.GetArrayFromImage(label), target_labels(target))
    return volume, mask, tuple(image.GetSpacing())
