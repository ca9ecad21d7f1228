"""Shared fixtures: the shipped BraTS demo cases and a per-session engine cache.

Tests never write into the repository's engines/ folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "brats_demo"
CASES = ("BraTS20_Demo_001", "BraTS20_Demo_002")
TUMOUR_CORE = (1, 4)


def read_demo(case: str, kind: str) -> np.ndarray:
    """One demo volume ("t1ce" or "seg") as SimpleITK reads it; from the arrays exported by
    `make gpu-bundle` when SAMFAST_DEMO_ARRAYS names their folder (a machine without SimpleITK)."""
    arrays = os.environ.get("SAMFAST_DEMO_ARRAYS")
    if arrays:
        with np.load(Path(arrays) / f"{case}.npz") as stored:
            return stored[kind]
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(DEMO / case / f"{case}_{kind}.nii.gz")))


@pytest.fixture(scope="session", autouse=True)
def engine_dir(tmp_path_factory) -> Path:
    """Exports go to a session-private cache, built once per test session."""
    folder = tmp_path_factory.mktemp("engines")
    with pytest.MonkeyPatch.context() as patch:  # restores the variable (or its absence) after
        patch.setenv("SAMFAST_ENGINES", str(folder))
        yield folder


@pytest.fixture(scope="session", autouse=True)
def samfast_cache(tmp_path_factory) -> Path:
    """A session-private cache folder: no machine profile of the developer's (samfast tune) changes
    which backend a command run without --backend gets (the CLI reads the profile; a Predictor only
    uses one it is handed)."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAMFAST_CACHE", str(folder))
        yield folder


def load_case(case: str) -> tuple[np.ndarray, np.ndarray]:
    """(t1ce volume z,y,x float32, tumour-core mask z,y,x bool) of a shipped demo case."""
    t1ce, seg = read_demo(case, "t1ce"), read_demo(case, "seg")
    return t1ce.astype(np.float32), np.isin(seg, TUMOUR_CORE)


@pytest.fixture(scope="session")
def demo_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {case: load_case(case) for case in CASES}


def tumour_slices(mask: np.ndarray, count: int, min_area: int = 100) -> list[int]:
    """``count`` axial slices spread over the tumour's extent, each with >= min_area pixels."""
    areas = mask.sum(axis=(1, 2))
    candidates = np.flatnonzero(areas >= min_area)
    picks = np.linspace(0, candidates.size - 1, count).round().astype(int)
    return [int(candidates[i]) for i in picks]
