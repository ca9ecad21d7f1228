"""Simulated prompts on hand-made masks whose right answer is known.

Point rules (Putz, Mazurowski) and box perturbations (MedSAM jitter, Ren mm margin, Putz 3D extent).
"""

from __future__ import annotations

import numpy as np
import pytest

from samfast.eval.metrics import bounding_box
from samfast.eval.prompts import (
    extent_box_3d,
    jittered_box,
    margin_box,
    mazurowski_first_point,
    mazurowski_next_point,
    putz_first_point,
    putz_next_point,
)


def disc(shape=(64, 80), centre=(30, 45), radius=12) -> np.ndarray:
    ys, xs = np.indices(shape)
    return (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2


def l_shape() -> np.ndarray:
    mask = np.zeros((80, 80), bool)
    mask[10:70, 10:40] = True  # thick vertical bar, 30 px wide
    mask[60:70, 40:75] = True  # thin foot, 10 px high
    return mask


def test_first_point_of_a_disc_is_its_centre():
    assert putz_first_point(disc()) == (45, 30, 1)
    assert mazurowski_first_point(disc(), np.random.default_rng(0)) == (45, 30, 1)


def test_first_point_of_an_l_shape_is_in_the_thick_part():
    rng = np.random.default_rng(3)
    for x, y, label in [putz_first_point(l_shape()), mazurowski_first_point(l_shape(), rng)]:
        assert label == 1 and 10 <= x < 40 and 10 <= y < 70
        assert 20 <= x < 30  # at least 10 px from both long sides of the bar


def test_putz_ties_go_to_the_first_maximum_in_row_major_order():
    square = np.zeros((20, 20), bool)
    square[4:8, 4:8] = True  # even side: four pixels share the maximum distance
    assert putz_first_point(square) == (5, 5, 1)


def test_mazurowski_ties_are_random_but_seeded():
    square = np.zeros((20, 20), bool)
    square[4:8, 4:8] = True
    picks = {mazurowski_first_point(square, np.random.default_rng(seed)) for seed in range(40)}
    assert picks == {(5, 5, 1), (6, 5, 1), (5, 6, 1), (6, 6, 1)}
    again = [mazurowski_first_point(square, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(again)) == 1


def test_empty_prediction_gives_a_foreground_point_at_the_gt_centre():
    gt = disc()
    assert putz_next_point(gt, np.zeros_like(gt)) == (45, 30, 1)
    assert mazurowski_next_point(gt, np.zeros_like(gt), np.random.default_rng(0)) == (45, 30, 1)


def test_prediction_larger_than_gt_gives_a_background_point_outside_gt():
    gt = disc(radius=8)
    pred = disc(radius=8) | disc(centre=(30, 65), radius=10)  # leaks into a second blob
    x, y, label = putz_next_point(gt, pred)
    assert label == 0 and not gt[y, x] and pred[y, x] and (x, y) == (65, 30)
    x, y, label = mazurowski_next_point(gt, pred, np.random.default_rng(1))
    assert label == 0 and not gt[y, x] and (x, y) == (65, 30)


def test_putz_uses_the_area_rule_not_the_larger_error():
    gt = disc(radius=12)
    # Prediction misses a big part of the GT but adds even more outside: area(pred) > area(GT), so
    # Putz places a background point although the missed region is the thicker one.
    pred = gt.copy()
    pred[18:42, 45:] = False
    pred[:, 60:] = True
    assert pred.sum() > gt.sum()
    assert putz_next_point(gt, pred)[2] == 0


def test_putz_falls_back_to_the_other_difference_when_one_is_empty():
    gt = disc(radius=12)
    pred = disc(radius=6)  # inside GT: nothing extra, so a foreground point whatever the areas
    x, y, label = putz_next_point(gt, pred)
    assert label == 1 and gt[y, x] and not pred[y, x]


def test_mazurowski_label_follows_the_gt_at_the_chosen_error_pixel():
    gt = disc(radius=12)
    pred = disc(centre=(30, 55), radius=12)  # shifted right: misses on the left, extra on the right
    for seed in range(10):
        x, y, label = mazurowski_next_point(gt, pred, np.random.default_rng(seed))
        assert label == int(gt[y, x]) and (gt ^ pred)[y, x]


def test_image_border_counts_as_boundary_of_the_error_region():
    gt = np.zeros((40, 40), bool)
    gt[10:30, 10:30] = True
    pred = gt.copy()
    pred[:, 36:] = True  # a 4-px stripe along the right border
    # Without the padding the border column 39 would be farthest from the stripe's only edge.
    assert mazurowski_next_point(gt, pred, np.random.default_rng(0))[0] in (37, 38)
    assert putz_next_point(gt, pred) == (37, 1, 0)


def test_perfect_prediction_gives_no_further_point():
    gt = disc()
    assert putz_next_point(gt, gt) is None
    assert mazurowski_next_point(gt, gt.copy(), np.random.default_rng(0)) is None


def test_empty_ground_truth_is_refused():
    with pytest.raises(ValueError, match="empty"):
        putz_first_point(np.zeros((10, 10), bool))


def test_jittered_box_contains_the_tight_box_within_max_px_and_the_image():
    gt = disc(shape=(64, 80), centre=(10, 70), radius=8)  # near the top-right corner
    tight = bounding_box(gt)
    for seed in range(50):
        box = jittered_box(gt, np.random.default_rng(seed), max_px=20)
        assert (box[:2] <= tight[:2]).all() and (box[2:] >= tight[2:]).all()
        assert (np.abs(box - tight) <= 20).all()
        assert box.min() >= 0 and box[2] <= 79 and box[3] <= 63
    boxes = [jittered_box(gt, np.random.default_rng(seed)) for seed in range(20)]
    assert len({tuple(b) for b in boxes}) > 10


def test_margin_box_converts_millimetres_per_axis():
    gt = disc(shape=(200, 200), centre=(100, 100), radius=10)
    tight = bounding_box(gt)
    spacing = (4.0, 0.5)  # rows 4 mm, columns 0.5 mm
    for seed in range(50):
        box = margin_box(gt, np.random.default_rng(seed), spacing, max_mm=20)
        grow = (box - tight) * np.array([-1, -1, 1, 1])
        assert (grow >= 0).all()
        assert (grow[[0, 2]] <= 40 + 1e-4).all()  # 20 mm / 0.5 mm per column
        assert (grow[[1, 3]] <= 5 + 1e-4).all()  # 20 mm / 4 mm per row
    widest = max(margin_box(gt, np.random.default_rng(s), spacing)[2] - tight[2] for s in range(50))
    assert widest > 20  # more than the row limit: the column spacing is really used


def test_margin_box_is_clipped_to_the_image():
    gt = disc(shape=(40, 40), centre=(5, 5), radius=4)
    box = margin_box(gt, np.random.default_rng(0), (1.0, 1.0), max_mm=100)
    assert box.min() >= 0 and box[2] <= 39 and box[3] <= 39


def test_boxes_are_deterministic_for_a_seed():
    gt = disc()
    assert (jittered_box(gt, np.random.default_rng(5)) == jittered_box(gt, np.random.default_rng(5))).all()
    one = margin_box(gt, np.random.default_rng(5), (1.0, 1.2))
    assert (one == margin_box(gt, np.random.default_rng(5), (1.0, 1.2))).all()


def test_extent_box_covers_the_tumour_on_every_slice():
    volume = np.zeros((5, 50, 60), bool)
    volume[1, 10:20, 30:40] = True
    volume[3, 25:35, 5:15] = True
    assert extent_box_3d(volume).tolist() == [5, 10, 39, 34]
    with pytest.raises(ValueError):
        extent_box_3d(np.zeros((2, 5, 5), bool))


def brute_force_distance_inside(region: np.ndarray) -> np.ndarray:
    """Each region pixel's distance to the nearest pixel outside it or outside the image (the ring
    of pixels around the image), from all pairwise distances: no distance transform."""
    from scipy.spatial.distance import cdist

    outside = ~np.pad(region, 1, constant_values=False)
    inside = np.argwhere(np.pad(region, 1, constant_values=False))
    distance = np.zeros(region.shape)
    if inside.size:
        nearest = cdist(inside, np.argwhere(outside)).min(axis=1)
        distance[inside[:, 0] - 1, inside[:, 1] - 1] = nearest
    return distance


def blobs(seed: int) -> np.ndarray:
    """Irregular regions of several parts in an 80×70 image, some cut by its edges."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).standard_normal((80, 70))
    return ndimage.gaussian_filter(noise, 4) > 0.05


@pytest.mark.parametrize("seed", range(6))
def test_point_rules_distance_map_equals_brute_force(seed):
    """The distance map behind the Putz and Mazurowski points (computed on the region's box) is
    every pixel's true distance to the nearest background or image-edge pixel."""
    from samfast.eval.prompts import _distance_inside

    region = blobs(seed)
    assert region.any() and (region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())
    exact = {"rtol": 0, "atol": 1e-12}
    np.testing.assert_allclose(_distance_inside(region), brute_force_distance_inside(region), **exact)
    part = np.zeros_like(region)
    part[20:50, 25:40] = region[20:50, 25:40]  # one region away from the edges
    np.testing.assert_allclose(_distance_inside(part), brute_force_distance_inside(part), **exact)
    assert not _distance_inside(np.zeros_like(region)).any()
