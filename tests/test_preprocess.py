"""Tests for samfast.preprocess: intensity normalisers and SAM input geometry.
Synthetic arrays pin exact values; one BraTS t1ce volume checks real-data behaviour."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from samfast.preprocess import (
    CT_WINDOW_MEDSAM,
    CT_WINDOW_REN,
    NORMALIZERS,
    clip_pet_suv,
    fuse_rgb,
    normalize,
    normalize_mr_percentile,
    normalize_mr_putz,
    pad_to_square,
    preprocess_shape,
    resize_longest_side,
    to_three_channels,
    transform_boxes,
    transform_coords,
    window_ct,
)

REPO = Path(__file__).resolve().parents[1]
CASE = Path("brats_demo/BraTS20_Demo_001")
TUMOUR_SLICE = 94


def _brats_file(name: str) -> Path:
    # The repo copy wins; the shared checkout is a fallback for bare worktrees.
    for root in (REPO / "data", REPO.parent / "shared" / "data"):
        path = root / CASE / name
        if path.exists():
            return path
    pytest.skip(f"BraTS demo file {name} not found under data/ or ../shared/data/")


@pytest.fixture(scope="module")
def t1ce_volume() -> np.ndarray:
    sitk = pytest.importorskip("SimpleITK")
    return sitk.GetArrayFromImage(sitk.ReadImage(str(_brats_file("BraTS20_Demo_001_t1ce.nii.gz"))))


@pytest.fixture(scope="module")
def seg_volume() -> np.ndarray:
    sitk = pytest.importorskip("SimpleITK")
    return sitk.GetArrayFromImage(sitk.ReadImage(str(_brats_file("BraTS20_Demo_001_seg.nii.gz"))))


def _has_fractional_values(arr: np.ndarray) -> bool:
    return bool(np.any(np.abs(arr - np.round(arr)) > 1e-3))


# --- Putz --------------------------------------------------------------------------


def test_putz_shifts_zscored_volume_so_min_is_zero_and_max_is_255() -> None:
    vol = np.array([[-3.5, -1.0], [0.0, 2.5]], dtype=np.float32)
    out = normalize_mr_putz(vol)
    np.testing.assert_allclose(out, (vol + 3.5) / 6.0 * 255.0, rtol=1e-6)
    assert out.min() == 0.0
    assert out.max() == 255.0


def test_putz_on_nonnegative_volume_is_divide_by_max_times_255() -> None:
    vol = np.array([10.0, 20.0, 40.0], dtype=np.float32)
    out = normalize_mr_putz(vol)
    # No shift for raw MRI: the smallest voxel keeps its share of the maximum.
    np.testing.assert_allclose(out, [63.75, 127.5, 255.0], rtol=1e-6)


def test_putz_returns_float32_without_uint8_quantisation() -> None:
    vol = np.linspace(-2.0, 5.0, 101, dtype=np.float64)
    out = normalize_mr_putz(vol)
    assert out.dtype == np.float32
    assert _has_fractional_values(out)


@pytest.mark.parametrize(
    ("volume", "match"),
    [
        (np.full((3, 3), 7.0), "constant"),
        (np.zeros((4, 4)), "constant"),
        (np.zeros((0,)), "empty"),
        (np.array([0.0, np.nan, 1.0]), "NaN"),
        (np.array([0.0, np.inf, 1.0]), "inf"),
    ],
)
def test_putz_rejects_degenerate_or_non_finite_volumes(volume: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        normalize_mr_putz(volume)


def test_putz_on_brats_volume_spans_0_to_255_with_fractional_values(
    t1ce_volume: np.ndarray,
) -> None:
    out = normalize_mr_putz(t1ce_volume)
    assert out.dtype == np.float32
    assert out.min() == 0.0
    assert out.max() == 255.0
    assert _has_fractional_values(out[TUMOUR_SLICE])


def test_putz_on_brats_volume_is_affine_so_intensity_order_is_kept(
    t1ce_volume: np.ndarray,
) -> None:
    src = t1ce_volume[TUMOUR_SLICE].astype(np.float64).ravel()
    out = normalize_mr_putz(t1ce_volume)[TUMOUR_SLICE].astype(np.float64).ravel()
    slope, intercept = np.polyfit(src, out, 1)
    assert slope > 0
    np.testing.assert_allclose(out, slope * src + intercept, atol=1e-3)


# --- MedSAM percentile ---------------------------------------------------------------


def test_percentile_clips_outliers_to_0_and_255_and_scales_linearly() -> None:
    image = np.arange(1000, dtype=np.float32)
    lo, hi = np.percentile(image, [0.5, 99.5])
    out = normalize_mr_percentile(image)
    assert np.all(out[image <= lo] == 0.0)
    assert np.all(out[image >= hi] == 255.0)
    np.testing.assert_allclose(out[500], (500 - lo) / (hi - lo) * 255.0, rtol=1e-5)
    assert out.dtype == np.float32


def test_percentile_computes_bounds_over_mask_voxels_only() -> None:
    image = np.zeros((20, 20), dtype=np.float32)
    image[5:15, 5:15] = np.linspace(100.0, 200.0, 100).reshape(10, 10)
    mask = image > 0
    with_mask = normalize_mr_percentile(image, lower=0.0, upper=100.0, mask=mask)
    without_mask = normalize_mr_percentile(image, lower=0.0, upper=100.0)
    # Inside the mask 100 is the minimum; over all voxels the background 0 is.
    assert with_mask[5, 5] == 0.0
    np.testing.assert_allclose(without_mask[5, 5], 127.5, rtol=1e-6)
    assert with_mask[14, 14] == 255.0


def test_percentile_degenerate_range_returns_zeros() -> None:
    out = normalize_mr_percentile(np.full((5, 5), 3.0))
    assert out.dtype == np.float32
    assert np.array_equal(out, np.zeros((5, 5), dtype=np.float32))


def test_percentile_rejects_mask_of_wrong_shape() -> None:
    with pytest.raises(ValueError, match="mask shape"):
        normalize_mr_percentile(np.ones((4, 4)), mask=np.ones((4, 5), dtype=bool))


def test_percentile_on_brats_slice_saturates_about_half_a_percent_of_brain(
    t1ce_volume: np.ndarray,
) -> None:
    sl = t1ce_volume[TUMOUR_SLICE]
    brain = sl > sl.min()
    out = normalize_mr_percentile(sl, mask=brain)
    assert out.min() == 0.0
    assert out.max() == 255.0
    saturated = np.mean(out[brain] == 255.0)
    assert 0.001 < saturated < 0.01
    assert _has_fractional_values(out)


# --- CT ------------------------------------------------------------------------------


def test_ct_window_maps_level_minus_half_width_to_zero() -> None:
    out = window_ct(np.array([-160.0, -1000.0]), level=40.0, width=400.0)
    assert np.array_equal(out, [0.0, 0.0])


def test_ct_window_maps_level_plus_half_width_to_255_and_level_to_midpoint() -> None:
    out = window_ct(np.array([240.0, 3000.0, 40.0]), level=40.0, width=400.0)
    np.testing.assert_allclose(out, [255.0, 255.0, 127.5])


def test_ct_medsam_window_spans_minus_500_to_1000_hu() -> None:
    assert CT_WINDOW_MEDSAM == (250.0, 1500.0)
    hu = np.array([-1000, -500, 250, 1000, 3000], dtype=np.int16)
    out = normalize(hu, "ct-medsam")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 127.5, 255.0, 255.0])


def test_ct_ren_window_spans_minus_160_to_240_hu() -> None:
    assert CT_WINDOW_REN == (40.0, 400.0)
    np.testing.assert_allclose(normalize(np.array([-160.0, 240.0]), "ct-ren"), [0.0, 255.0])


@pytest.mark.parametrize("width", [0.0, -10.0])
def test_ct_window_rejects_non_positive_width(width: float) -> None:
    with pytest.raises(ValueError, match="width"):
        window_ct(np.zeros((2, 2)), level=40.0, width=width)


# --- PET -----------------------------------------------------------------------------


def test_pet_clips_suv_to_0_6_and_rescales() -> None:
    out = clip_pet_suv(np.array([-1.0, 0.0, 3.0, 6.0, 12.0]))
    np.testing.assert_allclose(out, [0.0, 0.0, 127.5, 255.0, 255.0])
    assert out.dtype == np.float32


def test_pet_rejects_empty_suv_range() -> None:
    with pytest.raises(ValueError, match="high > low"):
        clip_pet_suv(np.zeros(3), low=6.0, high=6.0)


# --- Fusion --------------------------------------------------------------------------


def _mri_rule(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.0, 99.5])
    return (np.clip(image, lo, hi) - lo) / (hi - lo) * 255.0


def test_fuse_rgb_puts_ct_in_red_pet_in_green_and_mri_mean_in_blue() -> None:
    rng = np.random.default_rng(0)
    ct = np.full((8, 8), 1000.0)  # above the soft-tissue window: saturated red
    pet = np.zeros((8, 8))  # SUV 0: no green
    t1w = rng.uniform(0, 800, size=(8, 8))
    t2w = rng.uniform(0, 300, size=(8, 8))
    out = fuse_rgb(ct, pet, t1w, t2w)
    assert out.shape == (8, 8, 3)
    assert out.dtype == np.float32
    assert np.all(out[..., 0] == 255.0)
    assert np.all(out[..., 1] == 0.0)
    np.testing.assert_allclose(out[..., 2], (_mri_rule(t1w) + _mri_rule(t2w)) / 2, rtol=1e-4)


def test_fuse_rgb_honours_custom_ct_window() -> None:
    ct = np.full((2, 2), 250.0)
    ones = np.ones((2, 2))
    out = fuse_rgb(ct, ones, ones, ones, ct_window=CT_WINDOW_MEDSAM)
    np.testing.assert_allclose(out[..., 0], 127.5)
    np.testing.assert_allclose(out[..., 1], 255.0 / 6.0, rtol=1e-6)


def test_fuse_rgb_shape_mismatch_error_names_the_shapes() -> None:
    a, b = np.zeros((4, 4)), np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"pet=\(4, 5\)"):
        fuse_rgb(a, b, a, a)


# --- Channels and presets ----------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 1)])
def test_to_three_channels_replicates_single_channel(shape: tuple[int, ...]) -> None:
    image = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) + 0.25
    out = to_three_channels(image)
    assert out.shape == (4, 5, 3)
    assert out.dtype == np.float32
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], image.reshape(4, 5))


def test_to_three_channels_keeps_rgb_values_as_float32() -> None:
    image = np.random.default_rng(1).uniform(0, 255, size=(3, 2, 3))
    out = to_three_channels(image)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, image, rtol=1e-6)


@pytest.mark.parametrize("shape", [(5,), (4, 5, 2), (2, 4, 5, 3)])
def test_to_three_channels_rejects_other_shapes_naming_the_shape(
    shape: tuple[int, ...],
) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        to_three_channels(np.zeros(shape))


def test_normalizers_registry_has_exactly_the_documented_presets() -> None:
    assert set(NORMALIZERS) == {"putz", "medsam-mr", "ct-medsam", "ct-ren", "pet"}


@pytest.mark.parametrize("preset", sorted(NORMALIZERS))
def test_every_preset_returns_float32_within_0_255(preset: str) -> None:
    image = np.linspace(-1000.0, 2000.0, 64).reshape(8, 8)
    out = normalize(image, preset)
    assert out.dtype == np.float32
    assert out.shape == (8, 8)
    assert out.min() >= 0.0
    assert out.max() <= 255.0
    assert out.max() > out.min()


def test_normalize_dispatches_to_the_named_function() -> None:
    image = np.linspace(-3.0, 4.0, 30)
    np.testing.assert_array_equal(normalize(image, "putz"), normalize_mr_putz(image))
    np.testing.assert_array_equal(normalize(image, "medsam-mr"), normalize_mr_percentile(image))


def test_normalize_unknown_preset_lists_valid_presets() -> None:
    with pytest.raises(ValueError, match="unknown preset 'ct'.*ct-medsam.*ct-ren.*putz"):
        normalize(np.zeros(3), "ct")


# --- Geometry ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "target", "expected"),
    [
        ((240, 240), 256, (256, 256)),
        ((240, 160), 1024, (1024, 683)),
        ((100, 300), 30, (10, 30)),
    ],
)
def test_preprocess_shape_scales_longest_side_to_target(
    size: tuple[int, int], target: int, expected: tuple[int, int]
) -> None:
    assert preprocess_shape(size, target) == expected
    assert preprocess_shape(size, target) == ResizeLongestSide.get_preprocess_shape(*size, target)


def test_resize_longest_side_keeps_aspect_ratio_and_float_values() -> None:
    image = np.linspace(0.0, 1.0, 240 * 160 * 3, dtype=np.float32).reshape(240, 160, 3)
    out = resize_longest_side(image, 256)
    # Upstream apply_image_torch would size from (B, C) = (1, 3) and give 85 x 256.
    assert out.shape == (256, 171, 3)
    assert abs(out.shape[1] / out.shape[0] - 160 / 240) < 1 / 171
    assert out.dtype == np.float32
    assert out.max() <= 1.0
    assert _has_fractional_values(out * 255.0)


def test_resize_longest_side_preserves_constant_non_integer_intensity() -> None:
    out = resize_longest_side(np.full((30, 20, 3), 3.7, dtype=np.float32), 64)
    np.testing.assert_allclose(out, 3.7, rtol=1e-5)


def test_resize_longest_side_returns_2d_for_2d_input() -> None:
    out = resize_longest_side(np.ones((10, 40)), 80)
    assert out.shape == (20, 80)


@pytest.mark.parametrize("target", [12, 3])
def test_resize_matches_upstream_interpolation_when_shape_bug_is_moot(target: int) -> None:
    # With batch == H and channels == W, upstream's (B, C) size rule equals (H, W);
    # target 3 downsamples, where antialiasing changes the result.
    image = np.random.default_rng(2).uniform(0, 255, size=(6, 4, 4)).astype(np.float32)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(6, 1, 1, 1)
    upstream = ResizeLongestSide(target).apply_image_torch(batch)
    expected = upstream[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(resize_longest_side(image, target), expected, rtol=1e-6)


def test_pad_to_square_places_content_top_left() -> None:
    image = np.full((3, 2, 3), 5.5, dtype=np.float32)
    out = pad_to_square(image, 4, value=-1.0)
    assert out.shape == (4, 4, 3)
    assert out.dtype == np.float32
    assert np.all(out[:3, :2] == 5.5)
    assert np.all(out[3:, :] == -1.0)
    assert np.all(out[:, 2:] == -1.0)


def test_pad_to_square_handles_2d_and_rejects_oversized_images() -> None:
    assert pad_to_square(np.ones((2, 3)), 3).shape == (3, 3)
    with pytest.raises(ValueError, match="does not fit"):
        pad_to_square(np.ones((5, 3)), 4)


def test_transform_coords_scales_240_image_centre_to_256_space() -> None:
    coords = np.array([[120, 60], [0, 240]])
    out = transform_coords(coords, (240, 240), 256)
    np.testing.assert_allclose(out, [[128.0, 64.0], [0.0, 256.0]])
    assert out.dtype == np.float32


def test_transform_coords_scales_x_and_y_by_their_own_axes_for_non_square_images() -> None:
    # H=240, W=160 -> 1024 x 683: x scales by 683/160, y by 1024/240.
    out = transform_coords(np.array([[[160.0, 240.0]]]), (240, 160), 1024)
    assert out.shape == (1, 1, 2)
    np.testing.assert_allclose(out[0, 0], [683.0, 1024.0], rtol=1e-6)


def test_transform_coords_rejects_points_without_xy_pairs() -> None:
    with pytest.raises(ValueError, match="coords"):
        transform_coords(np.zeros((3, 3)), (10, 10), 20)


def test_transform_boxes_scales_single_and_batched_boxes() -> None:
    single = transform_boxes(np.array([0, 0, 240, 120]), (240, 240), 256)
    assert single.shape == (4,)
    np.testing.assert_allclose(single, [0.0, 0.0, 256.0, 128.0])
    batch = transform_boxes(np.array([[12, 24, 36, 48], [0, 0, 240, 240]]), (240, 240), 256)
    assert batch.shape == (2, 4)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], np.array([12, 24, 36, 48]) * 256 / 240, rtol=1e-6)


def test_transform_boxes_rejects_wrong_box_length() -> None:
    with pytest.raises(ValueError, match="boxes"):
        transform_boxes(np.zeros((2, 3)), (10, 10), 20)


def test_brats_tumour_slice_pipeline_yields_sam_input_and_box_inside_content(
    t1ce_volume: np.ndarray, seg_volume: np.ndarray
) -> None:
    sl = normalize_mr_putz(t1ce_volume)[TUMOUR_SLICE]
    rgb = to_three_channels(sl)
    resized = resize_longest_side(rgb, 1024)
    padded = pad_to_square(resized, 1024)
    assert padded.shape == (1024, 1024, 3)
    assert padded.dtype == np.float32
    assert _has_fractional_values(padded)

    ys, xs = np.nonzero(seg_volume[TUMOUR_SLICE])
    assert ys.size > 0, "slice 94 of case 001 is expected to contain tumour"
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
    sam_box = transform_boxes(box, sl.shape, 1024)
    np.testing.assert_allclose(sam_box, box * 1024 / 240, rtol=1e-6)
    x0, y0, x1, y1 = sam_box.astype(int)
    # Enhancing tumour is brighter than the slice on average on t1ce.
    assert padded[y0:y1, x0:x1].mean() > padded[:1024, :1024].mean()
