"""The evaluation's building blocks on hand-made inputs: planes, crop, visiting order, vote, readers,
resumable records and the summary statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import stats

from samfast.errors import InputError
from samfast.eval import records
from samfast.eval.datasets import find_brats_cases, find_pairs, load_case, read_pairs_csv, target_labels
from samfast.eval.run import Settings, _select_previous
from samfast.eval.slicing import (
    crop_to_target,
    from_plane_view,
    majority_vote,
    plane_view,
    slice_spacing,
    spread,
    target_slices,
    visiting_order,
)
from samfast.eval.summary import describe, summarise


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_plane_views_walk_the_right_axis_and_invert(plane):
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)  # z, y, x
    view = plane_view(volume, plane)
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
    assert view.shape[0] == volume.shape[axis]
    np.testing.assert_array_equal(view[2], np.take(volume, 2, axis=axis))
    np.testing.assert_array_equal(from_plane_view(view, plane), volume)


def test_slice_spacing_follows_the_plane():
    spacing_xyz = (0.5, 0.7, 3.0)
    assert slice_spacing(spacing_xyz, "axial") == (0.7, 0.5)  # rows y, columns x
    assert slice_spacing(spacing_xyz, "coronal") == (3.0, 0.5)  # rows z, columns x
    assert slice_spacing(spacing_xyz, "sagittal") == (3.0, 0.7)  # rows z, columns y


def test_crop_grows_the_extent_by_the_margin_in_mm_per_axis():
    mask = np.zeros((40, 60, 80), bool)
    mask[20:23, 30:35, 40:42] = True
    box = crop_to_target(mask, spacing_xyz=(1.0, 2.0, 5.0), margin_mm=20.0)
    # 20 mm = 4 slices of 5 mm, 10 rows of 2 mm, 20 columns of 1 mm.
    assert box == (slice(16, 27), slice(20, 45), slice(20, 62))
    edge = np.zeros((10, 10, 10), bool)
    edge[0, 0, 0] = True
    assert crop_to_target(edge, (1, 1, 1), 3) == (slice(0, 4),) * 3  # clipped to the volume


def test_target_slices_spread_and_visiting_order():
    mask = np.zeros((10, 8, 8), bool)
    for z, n in {2: 1, 3: 4, 4: 9, 5: 16, 7: 4}.items():
        mask[z].flat[:n] = True
    assert list(target_slices(mask, 4)) == [3, 4, 5, 7]
    assert list(spread(np.arange(10), 3)) == [0, 4, 9] and list(spread(np.arange(3), 5)) == [0, 1, 2]
    areas = mask.reshape(10, -1).sum(axis=1)
    order, neighbour = visiting_order(np.array([2, 3, 4, 5, 7]), areas)
    assert order[0] == 5  # largest area first
    assert order == [5, 4, 7, 3, 2]
    assert neighbour == {5: None, 4: 5, 3: 4, 2: 3, 7: None}  # 6 is not a target slice
    assert all(order.index(neighbour[z]) < order.index(z) for z in order if neighbour[z] is not None)


def test_majority_vote_needs_two_of_three():
    a, b, c = (np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]), np.array([0, 0, 1, 0]))
    assert majority_vote([a, b, c]).tolist() == [True, False, True, False]


def test_previous_slice_selection_picks_the_mask_most_like_the_neighbour():
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    neighbour = np.zeros_like(gt)
    neighbour[6:14, 6:14] = True
    candidates = np.stack([np.ones_like(gt), gt & ~neighbour, neighbour])
    steps = [{"ious": [0.25, 0.36, 0.64], "suggested": 0}]
    _select_previous(steps, [candidates], neighbour)
    assert steps[0]["previous"] == 2 and steps[0]["previous_iou"] == 0.64
    _select_previous(steps, [candidates], None)  # the first slice: fall back to the suggested mask
    assert steps[0]["previous"] == 0


def test_packed_masks_round_trip_and_shrink():
    mask = np.zeros((240, 240), bool)
    mask[100:140, 90:150] = True
    text = records.pack_mask(mask)
    assert len(text) < 300
    np.testing.assert_array_equal(records.unpack_mask(text, mask.shape), mask)


def test_resume_drops_unfinished_slices_and_refuses_other_configs(tmp_path):
    base = {"case": "c", "plane": "axial", "backend": "onnxruntime", "protocol": "box"}
    finished = [{"row": "step", **base, "slice": 1}, {"row": "slice", **base, "slice": 1}]
    unfinished = [{"row": "step", **base, "slice": 2}]
    assert records.start_run(tmp_path, {"a": 1}, fresh=False) == []
    text = "".join(json.dumps(r) + "\n" for r in finished + unfinished) + '{"row": "st'
    (tmp_path / records.RESULTS).write_text(text)
    assert records.start_run(tmp_path, {"a": 1}, fresh=False) == finished
    assert records.read_rows(tmp_path / records.RESULTS) == finished
    with pytest.raises(InputError, match="another run"):
        records.start_run(tmp_path, {"a": 2}, fresh=False)
    assert records.start_run(tmp_path, {"a": 2}, fresh=True) == []


def test_target_labels_per_convention():
    assert target_labels("tc") == (1, 4) and target_labels("tc", "brats2023") == (1, 3)
    assert target_labels("et", "brats2023") == (3,) and target_labels("2,3") == (2, 3)
    assert target_labels("nonzero") is None
    with pytest.raises(InputError, match="target 'core'"):
        target_labels("core")


def _nifti(path, array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_readers_find_2020_2021_2023_layouts_and_skip_incomplete_cases(tmp_path):
    volume = np.ones((4, 6, 6), np.float32)
    label = np.zeros((4, 6, 6), np.uint8)
    label[1:3, 2:4, 2:4] = 3
    for name, sep, mod in (
        ("BraTS20_Training_001", "_", "t1ce"),
        ("BraTS2021_00002", "_", "t1ce"),
        ("BraTS-GLI-00003-000", "-", "t1c"),
    ):
        (tmp_path / name).mkdir()
        _nifti(tmp_path / name / f"{name}{sep}{mod}.nii.gz", volume)
        _nifti(tmp_path / name / f"{name}{sep}seg.nii.gz", label)
    (tmp_path / "BraTS20_Training_009").mkdir()
    _nifti(tmp_path / "BraTS20_Training_009" / "BraTS20_Training_009_seg.nii.gz", label)
    (tmp_path / "notes").mkdir()  # not a case: ignored
    cases, skipped = find_brats_cases(tmp_path)
    assert [c.convention for c in cases] == ["brats2023", "brats", "brats"]  # sorted by name
    assert [s.case_id for s in skipped] == ["BraTS20_Training_009"]
    assert "missing modality" in skipped[0].reason
    modern = next(c for c in cases if c.convention == "brats2023")
    _, mask, spacing = load_case(modern, "tc")  # label 3 is enhancing tumour in 2023
    assert mask.sum() == 8 and spacing == (1.0, 1.0, 1.0)
    legacy = next(c for c in cases if c.case_id == "BraTS2021_00002")
    with pytest.raises(InputError, match="no target voxels"):
        load_case(legacy, "tc")  # 3 is not a BraTS 2021 label


def test_generic_pairs_from_folders_and_csv(tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "lab").mkdir()
    for name in ("a", "b"):
        _nifti(tmp_path / "im" / f"{name}.nii.gz", np.ones((3, 4, 4), np.float32))
    _nifti(tmp_path / "lab" / "a_label.nii.gz", np.ones((3, 4, 4), np.uint8))
    cases, skipped = find_pairs(tmp_path / "im", tmp_path / "lab")
    assert [c.case_id for c in cases] == ["a"] and [s.case_id for s in skipped] == ["b"]
    (tmp_path / "list.csv").write_text(
        "image,label\nim/a.nii.gz,lab/a_label.nii.gz\nim/x.nii.gz,lab/x.nii.gz\n"
    )
    cases, skipped = read_pairs_csv(tmp_path / "list.csv")
    assert [c.case_id for c in cases] == ["a"] and "line 3" in skipped[0].reason
    (tmp_path / "bad.csv").write_text("path,mask\n")
    with pytest.raises(InputError, match="image,label"):
        read_pairs_csv(tmp_path / "bad.csv")


def test_describe_and_summary_statistics_match_numpy_and_scipy():
    values = [0.1, 0.4, 0.35, 0.8, None, float("inf")]
    entry = describe(values)
    finite = [0.1, 0.4, 0.35, 0.8]
    assert entry["n"] == 4 and entry["undefined"] == 2
    assert entry["mean"] == pytest.approx(np.mean(finite))
    assert (entry["q1"], entry["q3"]) == pytest.approx(tuple(np.percentile(finite, [25, 75])))
    rng = np.random.default_rng(0)
    areas = rng.uniform(50, 2000, 20)
    best = np.clip(areas / 2000 + rng.normal(0, 0.1, 20), 0, 1)
    rows = []
    for i, (area, value) in enumerate(zip(areas, best, strict=True)):
        selection = {
            "iou": float(value),
            "dice": 0.5,
            "nsd": 0.5,
            "hd95": 1.0,
            "points_at_best": 1,
            "mask": "",
        }
        base = {"case": "c", "plane": "axial", "slice": i, "backend": "b", "protocol": "box", "grade": "HGG"}
        rows.append(
            {
                "row": "step",
                **base,
                "ious": [value],
                "oracle_iou": value,
                "suggested_iou": value,
                "previous_iou": value,
            }
        )
        sel = {name: selection for name in ("oracle", "suggested", "previous")}
        rows.append({"row": "slice", **base, "area_mm2": float(area), "selections": sel})
    summary = summarise(rows, [], {"settings": Settings().record()})
    entry = summary["protocols"]["box"]["axial"]
    rho, _ = stats.spearmanr(areas, best)
    assert entry["spearman_best_iou_vs_area"]["rho"] == pytest.approx(rho)
    small = entry["by_area"]["<300 mm²"]["oracle"]
    assert small["n"] == int((areas < 300).sum())
    assert entry["curves"]["oracle"] == [pytest.approx(float(np.mean(best)))]


@pytest.mark.parametrize("model", ["litemedsam", "tiny_vit_test"])
def test_a_batch_holds_as_many_slices_as_the_image_state_bound_keeps(model):
    """The byte count per row is the split decoder's real image state, and 12 LiteMedSAM rows
    (10 MiB each) are what the 128 MiB bound keeps."""
    import torch

    from samfast.backends.image_states import STATE_BYTES
    from samfast.eval.run import rows_per_batch, split_state_bytes
    from samfast.export.split_decoder import DecoderImageSide
    from samfast.models import get_spec

    spec = get_spec(model)
    with torch.no_grad():
        state = DecoderImageSide(spec.builder()).eval()(torch.zeros(1, *spec.embedding_shape))
    assert split_state_bytes(spec.embedding_shape) == sum(t.numel() * t.element_size() for t in state)
    if model == "litemedsam":
        assert rows_per_batch(STATE_BYTES, split_state_bytes(spec.embedding_shape)) == 12
    assert rows_per_batch(100, 1000) == 1  # a state over the bound still makes batches of one
