"""Surface metrics (NSD, HD95, Hausdorff) against analytic answers and SimpleITK.

Shifted copies of one rasterised shape have exactly known surface distances, in any spacing.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from samfast.eval.metrics import dice, hausdorff, hd95, nsd


def ball(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def shifted(mask: np.ndarray, pixels: int, axis: int) -> np.ndarray:
    return np.roll(mask, pixels, axis=axis)


def sitk_hausdorff(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> float:
    images = []
    for mask in (a, b):
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing(tuple(reversed(spacing)))  # SimpleITK spacing is x, y(, z)
        images.append(image)
    measure = sitk.HausdorffDistanceImageFilter()
    measure.Execute(*images)
    return measure.GetHausdorffDistance()


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0), (3.0, 0.7)])
@pytest.mark.parametrize("axis", [0, 1])
def test_shifted_discs_have_hd95_near_the_shift_and_full_nsd_at_that_tolerance(spacing, axis):
    disc = ball((96, 96), (48, 48), 25)
    moved = shifted(disc, 4, axis)
    shift_mm = 4 * spacing[axis]
    assert hd95(disc, moved, spacing) == pytest.approx(shift_mm, abs=max(spacing))
    assert hd95(disc, moved, spacing) <= shift_mm + 1e-9
    assert nsd(disc, moved, spacing, tolerance_mm=shift_mm) == 1.0
    assert nsd(disc, moved, spacing, tolerance_mm=0.4 * min(spacing)) < 0.5


def test_identical_masks_score_perfectly_and_empty_masks_are_defined():
    disc = ball((40, 40), (20, 20), 10)
    empty = np.zeros_like(disc)
    assert hd95(disc, disc) == 0.0 and nsd(disc, disc) == 1.0
    assert hd95(empty, empty) == 0.0 and nsd(empty, empty) == 1.0
    assert hd95(disc, empty) == float("inf") and nsd(disc, empty) == 0.0


def test_spheres_in_3d_with_anisotropic_spacing():
    spacing = (2.5, 1.0, 0.8)
    sphere = ball((40, 64, 64), (20, 32, 32), 12)
    moved = shifted(sphere, 3, axis=0)
    assert hd95(sphere, moved, spacing) == pytest.approx(7.5, abs=2.5)
    assert nsd(sphere, moved, spacing, tolerance_mm=7.5) == 1.0
    assert nsd(sphere, moved, spacing, tolerance_mm=0.5) < nsd(sphere, moved, spacing, tolerance_mm=3.0)


def test_nsd_widens_with_tolerance_and_distances_are_symmetric():
    small = ball((64, 64), (32, 32), 10)
    large = ball((64, 64), (30, 34), 16)
    scores = [nsd(small, large, (1.0, 1.5), t) for t in (0.5, 2.0, 5.0, 50.0)]
    assert scores == sorted(scores) and scores[-1] == 1.0
    assert hd95(small, large, (1.0, 1.5)) == hd95(large, small, (1.0, 1.5))
    assert 0.0 < dice(small, large) < 1.0


@pytest.mark.parametrize(
    ("shape", "spacing", "shift", "axis"),
    [
        ((80, 80), (1.0, 1.0), 5, 0),
        ((80, 80), (0.6, 1.9), 7, 1),
        ((80, 80), (2.0, 0.5), 3, 0),
        ((30, 48, 48), (2.0, 1.0, 1.0), 4, 0),
        ((30, 48, 48), (1.0, 0.7, 1.3), 6, 2),
    ],
)
def test_max_hausdorff_matches_simpleitk(shape, spacing, shift, axis):
    centre = tuple(s / 2 for s in shape)
    a = ball(shape, centre, min(shape) / 4)
    b = shifted(a, shift, axis)
    assert hausdorff(a, b, spacing) == pytest.approx(sitk_hausdorff(a, b, spacing), rel=1e-6)
    assert hausdorff(a, b, spacing) == pytest.approx(shift * spacing[axis], rel=1e-6)


def test_wrong_spacing_is_refused():
    disc = ball((20, 20), (10, 10), 5)
    with pytest.raises(ValueError, match="spacing"):
        hd95(disc, disc, (1.0, 1.0, 1.0))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.6, 1.9)])
@pytest.mark.parametrize(("centre", "radius"), [((35, 44), 20), ((45, 30), 12)], ids=["contains", "overlaps"])
def test_max_hausdorff_matches_simpleitk_for_discs_of_different_size(spacing, centre, radius):
    a = ball((80, 80), (40, 40), 10)
    b = ball((80, 80), centre, radius)
    assert hausdorff(a, b, spacing) == pytest.approx(sitk_hausdorff(a, b, spacing), rel=1e-6)


def brute_force_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Every surface voxel's distance to the nearest surface voxel of the other mask, from all
    pairwise distances (no distance transform): the surfaces found by a face-neighbour check."""
    from scipy.spatial.distance import cdist

    def surface(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        inner = np.ones_like(mask)
        for axis in range(mask.ndim):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=axis)[tuple(slice(1, -1) for _ in mask.shape)]
        return np.argwhere(mask & ~inner) * np.asarray(spacing)

    pairs = cdist(surface(a), surface(b))
    return pairs.min(axis=1), pairs.min(axis=0)


def demo_mask_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """A demo case's tumour core on three slices against a distorted copy (dilated, shifted,
    clipped at the image edge), and the 3-D core of a slab against its erosion."""
    from conftest import load_case
    from scipy import ndimage

    _, core = load_case("BraTS20_Demo_001")
    areas = core.sum(axis=(1, 2))
    z = int(np.argmax(areas))
    pairs = []
    for offset, shift in ((0, 3), (-8, -5), (6, 2)):
        truth = core[z + offset]
        guess = np.roll(ndimage.binary_dilation(truth, iterations=2), shift, axis=1)
        guess[:, : int(np.flatnonzero(truth.any(axis=0))[0]) + 4] = True  # a strip to the image edge
        pairs.append((truth, guess))
    slab = core[z - 4 : z + 4]
    pairs.append((slab, ndimage.binary_erosion(slab, iterations=2)))
    return pairs


@pytest.mark.parametrize("index", range(4), ids=["slice", "slice-below", "slice-above", "slab-3d"])
def test_surface_metrics_on_demo_masks_match_brute_force_distances(index):
    """The transforms run on the box around both masks; the answers are those of all pairwise
    distances over the whole array, for masks far from the edge and masks cut by it."""
    a, b = demo_mask_pairs()[index]
    spacing = (0.9, 1.3) if a.ndim == 2 else (2.5, 0.9, 1.3)
    a_to_b, b_to_a = brute_force_distances(a, b, spacing)
    expected_hd95 = max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95))
    expected_nsd = ((a_to_b <= 2.0).sum() + (b_to_a <= 2.0).sum()) / (a_to_b.size + b_to_a.size)
    assert hd95(a, b, spacing) == pytest.approx(expected_hd95, rel=1e-9)
    assert hausdorff(a, b, spacing) == pytest.approx(max(a_to_b.max(), b_to_a.max()), rel=1e-9)
    assert nsd(a, b, spacing, tolerance_mm=2.0) == pytest.approx(expected_nsd, rel=1e-12)
