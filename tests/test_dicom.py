"""DICOM series in, NIfTI / RTSTRUCT / DICOM-SEG out, prompts in voxel and LPS: round trips on a real
series built from a demo case, and the bad inputs that must end in one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import TUMOUR_CORE
from dicom_fixtures import build_series, dciodvfy_errors, oblique, tumour_crop
from typer.testing import CliRunner

from samfast.cli import app
from samfast.clinical.dicom_seg import read_dicom_seg, write_dicom_seg
from samfast.clinical.prompts import build_prompts, read_prompts_file
from samfast.clinical.rtstruct import read_rtstruct_mask, write_rtstruct
from samfast.clinical.volume import load_volume, write_volume_mask
from samfast.errors import InputError

CASE = "BraTS20_Demo_001"


@pytest.fixture(scope="module")
def crop():
    return tumour_crop(CASE, slices=6, size=112)


@pytest.fixture(scope="module")
def series_dir(crop, tmp_path_factory):
    return build_series(oblique(crop[0]), tmp_path_factory.mktemp("dicom") / "series")


@pytest.fixture(scope="module")
def loaded(series_dir):
    return load_volume(series_dir)


@pytest.fixture(scope="module")
def truth(crop) -> np.ndarray:
    return np.isin(sitk.GetArrayFromImage(crop[1]), TUMOUR_CORE)


def test_series_keeps_geometry_and_voxels_of_the_source(crop, loaded):
    source = oblique(crop[0])
    image = loaded.image
    assert image.GetSize() == source.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), source.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), source.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), source.GetDirection(), atol=1e-6)
    # Float MRI is stored as int16 with a rescale slope: equal to within one quantisation step.
    values, original = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(source)
    step = (original.max() - original.min()) / 65535
    assert np.abs(values - original).max() <= step
    uids = {str(ds.SOPInstanceUID) for ds in loaded.series.datasets}
    assert len(uids) == source.GetSize()[2]
    assert len({str(ds.SeriesInstanceUID) for ds in loaded.series.datasets}) == 1


def test_series_slices_are_in_volume_order(loaded):
    for z, ds in enumerate(loaded.series.datasets):
        expected = loaded.image.TransformIndexToPhysicalPoint((0, 0, z))
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-4)


def test_nifti_mask_keeps_source_geometry(loaded, truth, tmp_path):
    path = write_volume_mask(truth, loaded, tmp_path / "mask.nii.gz")
    back = sitk.ReadImage(str(path))
    assert back.GetSize() == loaded.image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), loaded.image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), loaded.image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), loaded.image.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(back).astype(bool), truth)


def test_rtstruct_round_trip_dice_and_references(loaded, truth, tmp_path):
    path = write_rtstruct(truth, loaded.series, tmp_path / "rt", "GTV core", (0, 200, 50))
    back = read_rtstruct_mask(path, loaded.series, "GTV core")
    assert truth.any(axis=(1, 2)).sum() >= 5
    assert np.array_equal(back, truth)  # voxel-edge contours: the voxel-centre reading is exact
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTSTRUCT"
    assert ds.StructureSetROISequence[0].ROIName == "GTV core"
    assert [int(v) for v in ds.ROIContourSequence[0].ROIDisplayColor] == [0, 200, 50]
    referenced = ds.ReferencedFrameOfReferenceSequence[0]
    assert referenced.FrameOfReferenceUID == loaded.series.datasets[0].FrameOfReferenceUID
    series_ref = referenced.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series_ref.SeriesInstanceUID == loaded.series.series_uid
    images = {str(c.ReferencedSOPInstanceUID) for c in series_ref.ContourImageSequence}
    assert images == {str(d.SOPInstanceUID) for d in loaded.series.datasets}


def test_dicom_seg_round_trip_is_identical(loaded, truth, tmp_path):
    mask = truth.copy()
    mask[0] = False  # an empty slice must come back empty
    path = write_dicom_seg(mask, loaded.series, tmp_path / "seg.dcm", "GTV")
    assert np.array_equal(read_dicom_seg(path, loaded.series), mask)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.SegmentSequence[0].SegmentLabel == "GTV"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC" and ds.Manufacturer == "samfast"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == loaded.series.series_uid


def test_lps_prompts_match_voxel_prompts(loaded, tmp_path):
    image = loaded.image
    voxel_box = [20.0, 30.0, 1.0, 80.0, 90.0, 4.0]
    corners = [image.TransformContinuousIndexToPhysicalPoint(voxel_box[i : i + 3]) for i in (0, 3)]
    click = image.TransformContinuousIndexToPhysicalPoint((50.0, 60.0, 2.0))
    spec = {"frame": "lps", "box": [*corners[0], *corners[1]], "points": [[*click, 1]]}
    (tmp_path / "prompts.json").write_text(json.dumps(spec))
    lps = read_prompts_file(tmp_path / "prompts.json", image)
    voxel = build_prompts(image, voxel_box, [(50.0, 60.0, 2.0, 1)])
    assert sorted(lps.slices) == sorted(voxel.slices) == [1, 2, 3, 4]
    # The oblique series makes the LPS box's voxel footprint the bounds of its rotated corners.
    assert (lps.slices[2].box[:2] <= voxel.slices[2].box[:2] + 1e-3).all()
    np.testing.assert_allclose(lps.slices[2].points, voxel.slices[2].points, atol=1e-3)


@pytest.mark.parametrize(
    "box, points",
    [([10, 10, 0, 200, 50, 3], None), ([10, 10, -3, 50, 50, 2], None), (None, [(10, 10, 9, 1)])],
)
def test_prompts_outside_the_volume_are_refused(loaded, box, points):
    with pytest.raises(InputError, match="outside the 112×112×6 volume"):
        build_prompts(loaded.image, box, points)


def _copy_series(series_dir, tmp_path, name="series"):
    target = tmp_path / name
    shutil.copytree(series_dir, target)
    return target


def test_two_series_in_one_folder_are_refused(series_dir, crop, tmp_path):
    folder = _copy_series(series_dir, tmp_path)
    build_series(crop[0], tmp_path / "other")
    shutil.copy(tmp_path / "other" / "slice_0000.dcm", folder / "extra.dcm")
    with pytest.raises(InputError, match="holds 2 DICOM series"):
        load_volume(folder)


def test_missing_slice_is_refused(series_dir, tmp_path):
    folder = _copy_series(series_dir, tmp_path)
    (folder / "slice_0003.dcm").unlink()
    with pytest.raises(InputError, match=r"1 slice\(s\) missing after slice_0002.dcm"):
        load_volume(folder)


def test_uneven_spacing_is_refused(series_dir, tmp_path):
    folder = _copy_series(series_dir, tmp_path)
    path = folder / "slice_0004.dcm"
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [
        float(v) + 0.8 * n for v, n in zip(ds.ImagePositionPatient, (0, 0, 1), strict=True)
    ]
    ds.save_as(path)
    with pytest.raises(InputError, match="uneven slice spacing"):
        load_volume(folder)


def _run(*args):
    result = CliRunner().invoke(app, ["segment", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_cli_bad_inputs_end_in_one_line_and_no_files(series_dir, crop, tmp_path):
    two = _copy_series(series_dir, tmp_path, "two")
    build_series(crop[0], tmp_path / "other")
    shutil.copy(tmp_path / "other" / "slice_0000.dcm", two / "extra.dcm")
    locked = Path("/sys")  # not writable, even for root
    out = tmp_path / "out"
    out.mkdir()
    box = ["--box", 10, 10, 1, 60, 60, 4]
    cases = [
        ([two, *box, "--out", out / "m.nii.gz"], "holds 2 DICOM series"),
        ([series_dir, "--box", 10, 10, 1, 60, 60, 40, "--out", out / "m.nii.gz"], "outside the"),
        ([series_dir, *box, "--seg", locked / "seg.dcm"], "not writable"),
        ([series_dir, *box, "--rtstruct", locked / "rt"], "not writable"),
        ([series_dir, *box, "--rtstruct", out / "rt", "--roi-type", "TUMOR"], "ROI type 'TUMOR'"),
        ([series_dir, *box, "--seg", out / "s.dcm", "--send", "PLANNING@host"], "expected AE@HOST:PORT"),
        ([series_dir, *box, "--rtstruct", out / "missing" / "rt"], "needs a folder"),
        ([crop_nifti(crop, tmp_path), *box, "--rtstruct", out / "rt"], "DICOM series folder"),
        ([series_dir, *box], "nothing to write"),
    ]
    for args, message in cases:
        code, stdout, stderr = _run(*args)
        assert code == 2, (args, stdout, stderr)
        assert stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr
        assert (
            list(out.iterdir()) == [] and not (locked / "seg.dcm").exists() and not (locked / "rt").exists()
        )


def crop_nifti(crop, tmp_path):
    path = tmp_path / "crop.nii.gz"
    if not path.exists():
        sitk.WriteImage(crop[0], str(path))
    return path
