"""Shared by the ctest scripts: their arguments and tally line, the shipped BraTS demo cases and how
slices are picked from them (the same rules as tests/conftest.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "brats_demo"
CASES = ("BraTS20_Demo_001", "BraTS20_Demo_002")
TUMOUR_CORE = (1, 4)


def library_arguments(description: str, formats) -> argparse.Namespace:
    """--lib (libsamfast), --fixtures (what fixtures.py wrote) and --format (one of ``formats``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--lib", required=True)
    parser.add_argument("--fixtures", type=Path, required=True)
    parser.add_argument("--format", choices=sorted(formats), default="onnx")
    return parser.parse_args()


def summarise(checks: int, failures: list[str]) -> int:
    """Print each failure and ctest's "N passed, N failed" line; the exit status."""
    for line in failures:
        print("FAIL", line)
    print(f"{checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def load_case(case: str) -> tuple[np.ndarray, np.ndarray]:
    """(t1ce volume z,y,x float32, tumour-core mask z,y,x bool) of a shipped demo case."""
    folder = DEMO / case
    t1ce = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}_t1ce.nii.gz")))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}_seg.nii.gz")))
    return t1ce.astype(np.float32), np.isin(seg, TUMOUR_CORE)


def tumour_slices(mask: np.ndarray, count: int, min_area: int = 100) -> list[int]:
    """``count`` axial slices spread over the tumour's extent, each with >= min_area pixels."""
    areas = mask.sum(axis=(1, 2))
    candidates = np.flatnonzero(areas >= min_area)
    picks = np.linspace(0, candidates.size - 1, count).round().astype(int)
    return [int(candidates[i]) for i in picks]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
