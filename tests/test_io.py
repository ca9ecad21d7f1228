"""Tests for samfast.io: reading images and slices, writing masks with the source geometry."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from samfast.errors import CheckpointError, InputError, SamfastError
from samfast.io import (
    SliceGeometry,
    atomic_path,
    atomic_write_bytes,
    find_demo_data,
    get_slice,
    read_image,
    read_slice,
    write_mask,
)

REPO = Path(__file__).resolve().parents[1]
CASE = REPO / "data" / "brats_demo" / "BraTS20_Demo_001"
T1CE = CASE / "BraTS20_Demo_001_t1ce.nii.gz"
SEG = CASE / "BraTS20_Demo_001_seg.nii.gz"
TUMOUR_SLICE = 94


def one_line_input_error(excinfo: pytest.ExceptionInfo[InputError]) -> str:
    message = str(excinfo.value)
    assert message, "empty error message"
    assert "\n" not in message, f"error message is not one line: {message!r}"
    assert excinfo.value.__cause__ is None or isinstance(excinfo.value.__cause__, SamfastError)
    return message


@pytest.fixture(scope="module")
def t1ce() -> sitk.Image:
    return read_image(T1CE)


@pytest.fixture(scope="module")
def tumour_mask() -> np.ndarray:
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(SEG)))
    return (seg[TUMOUR_SLICE] > 0).astype(np.uint8)


def test_error_hierarchy() -> None:
    assert issubclass(InputError, SamfastError)
    assert issubclass(CheckpointError, SamfastError)
    assert issubclass(SamfastError, Exception)
    assert not issubclass(InputError, CheckpointError)


def test_read_demo_t1ce_slice(t1ce: sitk.Image) -> None:
    assert t1ce.GetSize() == (240, 240, 155)
    plane = get_slice(t1ce, TUMOUR_SLICE)
    assert plane.shape == (240, 240)
    assert plane.dtype == np.float32
    np.testing.assert_array_equal(plane, sitk.GetArrayFromImage(t1ce)[TUMOUR_SLICE])
    assert plane.max() > plane.min()  # brain content, not only background


def test_tumour_present_on_demo_slice(tumour_mask: np.ndarray) -> None:
    assert tumour_mask.shape == (240, 240)
    assert 100 < int(tumour_mask.sum()) < 240 * 240 // 2


def test_read_slice_geometry(t1ce: sitk.Image) -> None:
    plane, geometry = read_slice(T1CE, TUMOUR_SLICE)
    assert plane.shape == (240, 240) and plane.dtype == np.float32
    assert geometry.size == (240, 240, 155)
    assert geometry.spacing == pytest.approx(t1ce.GetSpacing())
    assert geometry.origin == pytest.approx(t1ce.GetOrigin())
    assert geometry.direction == pytest.approx(t1ce.GetDirection())
    assert (geometry.index, geometry.axis) == (TUMOUR_SLICE, "axial")
    assert geometry.plane_spacing == pytest.approx((1.0, 1.0))
    assert geometry.slice_shape == (240, 240)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_write_mask_round_trip(
    t1ce: sitk.Image, tumour_mask: np.ndarray, tmp_path: Path, suffix: str
) -> None:
    out = write_mask(tumour_mask, t1ce, tmp_path / f"mask{suffix}", index=TUMOUR_SLICE)
    assert out == tmp_path / f"mask{suffix}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"mask{suffix}"]
    back = sitk.ReadImage(str(out))
    assert back.GetPixelID() == sitk.sitkUInt8
    assert back.GetSize() == t1ce.GetSize()
    assert back.GetSpacing() == pytest.approx(t1ce.GetSpacing(), abs=1e-6)
    assert back.GetOrigin() == pytest.approx(t1ce.GetOrigin(), abs=1e-5)
    assert back.GetDirection() == pytest.approx(t1ce.GetDirection(), abs=1e-6)
    volume = sitk.GetArrayFromImage(back)
    np.testing.assert_array_equal(volume[TUMOUR_SLICE], tumour_mask)
    volume[TUMOUR_SLICE] = 0
    assert not volume.any()
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_mask_from_slice_geometry(tumour_mask: np.ndarray, tmp_path: Path) -> None:
    _, geometry = read_slice(T1CE, TUMOUR_SLICE)
    out = write_mask(tumour_mask.astype(bool), geometry, tmp_path / "m.nii.gz")
    volume = sitk.GetArrayFromImage(read_image(out))
    np.testing.assert_array_equal(volume[TUMOUR_SLICE], tumour_mask)
    assert int(volume.sum()) == int(tumour_mask.sum())


def synthetic_volume() -> sitk.Image:
    array = np.arange(7 * 6 * 5, dtype=np.int16).reshape(7, 6, 5)  # z, y, x
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.75, 2.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    return image


@pytest.mark.parametrize(
    ("axis", "index", "shape", "plane_spacing"),
    [
        ("axial", 6, (6, 5), (0.75, 0.5)),
        ("coronal", 5, (7, 5), (2.0, 0.5)),
        ("sagittal", 4, (7, 6), (2.0, 0.75)),
    ],
)
def test_axes(tmp_path: Path, axis: str, index: int, shape: tuple[int, int], plane_spacing: tuple) -> None:
    image = synthetic_volume()
    array = sitk.GetArrayFromImage(image)
    pick = {
        "axial": lambda a: a[index],
        "coronal": lambda a: a[:, index, :],
        "sagittal": lambda a: a[:, :, index],
    }[axis]
    expected = pick(array)
    plane = get_slice(image, index, axis)
    assert plane.shape == shape
    np.testing.assert_array_equal(plane, expected.astype(np.float32))
    geometry = SliceGeometry.from_image(image, index, axis)
    assert geometry.plane_spacing == pytest.approx(plane_spacing)
    assert geometry.slice_shape == shape
    mask = np.zeros(shape, np.uint8)
    mask[1, 2] = 3
    volume = sitk.GetArrayFromImage(read_image(write_mask(mask, image, tmp_path / "m.nrrd", index, axis)))
    assert volume.sum() == 3
    np.testing.assert_array_equal(pick(volume), mask)
    with pytest.raises(InputError) as excinfo:
        get_slice(image, shape[0] + 10, axis)
    assert "out of range" in one_line_input_error(excinfo)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "nothing.nii.gz")
    assert "no such file" in one_line_input_error(excinfo)


def test_text_file_named_nifti(tmp_path: Path) -> None:
    fake = tmp_path / "x.nii.gz"
    fake.write_text("this is not an image\n")
    with pytest.raises(InputError) as excinfo:
        read_image(fake)
    message = one_line_input_error(excinfo)
    assert message.startswith(f"{fake}: not a readable image (")


@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_nifti(tmp_path: Path, compressed: bool) -> None:
    packed = SEG.read_bytes()
    raw = gzip.decompress(packed)
    data = packed[: len(packed) // 2] if compressed else raw[: len(raw) // 2]
    broken = tmp_path / ("cut.nii.gz" if compressed else "cut.nii")
    broken.write_bytes(data)
    with pytest.raises(InputError) as excinfo:
        read_image(broken)
    assert "not a readable image" in one_line_input_error(excinfo)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path)
    assert "folder" in one_line_input_error(excinfo)


@pytest.mark.parametrize("index", [155, -1, 1000])
def test_index_out_of_range(t1ce: sitk.Image, index: int) -> None:
    with pytest.raises(InputError) as excinfo:
        get_slice(t1ce, index)
    assert "0 to 154" in one_line_input_error(excinfo)


def test_index_required_for_3d(t1ce: sitk.Image) -> None:
    with pytest.raises(InputError) as excinfo:
        get_slice(t1ce)
    message = one_line_input_error(excinfo)
    assert "--slice" in message and "0 to 154" in message


def test_bad_axis(t1ce: sitk.Image) -> None:
    with pytest.raises(InputError) as excinfo:
        get_slice(t1ce, 3, "oblique")
    assert "oblique" in one_line_input_error(excinfo)


def test_shape_mismatch(t1ce: sitk.Image, tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        write_mask(np.ones((240, 239), np.uint8), t1ce, tmp_path / "m.nii.gz", 94)
    assert "(240, 239)" in one_line_input_error(excinfo)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [np.full((240, 240), 300), np.full((240, 240), 0.5)])
def test_bad_mask_values(t1ce: sitk.Image, tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(InputError) as excinfo:
        write_mask(bad, t1ce, tmp_path / "m.nii.gz", 94)
    one_line_input_error(excinfo)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder(t1ce: sitk.Image, tumour_mask: np.ndarray, tmp_path: Path):
    target = tmp_path / "no" / "such" / "folder" / "m.nii.gz"
    with pytest.raises(InputError) as excinfo:
        write_mask(tumour_mask, t1ce, target, TUMOUR_SLICE)
    assert "does not exist" in one_line_input_error(excinfo)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_leaves_nothing(t1ce, tumour_mask, tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        write_mask(tumour_mask, t1ce, tmp_path / "mask.xyz", TUMOUR_SLICE)
    one_line_input_error(excinfo)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["m.png", "m.jpg"])
def test_format_that_cannot_hold_the_mask(t1ce, tumour_mask, tmp_path, name) -> None:
    with pytest.raises(InputError) as excinfo:
        write_mask(tumour_mask, t1ce, tmp_path / name, TUMOUR_SLICE)
    one_line_input_error(excinfo)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_old_file_and_no_temp(
    t1ce: sitk.Image, tumour_mask: np.ndarray, tmp_path: Path, monkeypatch
) -> None:
    target = tmp_path / "mask.nii.gz"
    target.write_bytes(b"old")
    seen: list[str] = []

    def half_write(image: sitk.Image, name: str, *args: object, **kwargs: object) -> None:
        seen.append(name)
        Path(name).write_bytes(b"partial")
        raise RuntimeError("sitk::ERROR: disk full\nsecond line")

    monkeypatch.setattr(sitk, "WriteImage", half_write)
    with pytest.raises(InputError) as excinfo:
        write_mask(tumour_mask, t1ce, target, TUMOUR_SLICE)
    assert "disk full" in one_line_input_error(excinfo)
    assert len(seen) == 1
    temp = Path(seen[0])
    assert temp.parent == tmp_path and temp.name.endswith(".nii.gz")
    assert temp.name.startswith(".mask.nii.gz.tmp-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]
    assert target.read_bytes() == b"old"


def test_png_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(32, 48), dtype=np.uint8)
    source = tmp_path / "picture.png"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(source))
    image = read_image(source)
    assert image.GetDimension() == 2
    for index in (None, 0):
        plane = get_slice(image, index)
        assert plane.shape == (32, 48) and plane.dtype == np.float32
        np.testing.assert_array_equal(plane, grey.astype(np.float32))
    with pytest.raises(InputError) as excinfo:
        get_slice(image, 1)
    one_line_input_error(excinfo)
    _, geometry = read_slice(source)
    assert (geometry.size, geometry.index, geometry.slice_shape) == ((48, 32), 0, (32, 48))

    mask = (grey > 128).astype(np.uint8)
    out = write_mask(mask, image, tmp_path / "mask.png")
    back = read_image(out)
    assert back.GetSize() == (48, 32)
    assert back.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "picture.png"]


def test_rgb_png(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    source = tmp_path / "colour.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(source))
    plane, geometry = read_slice(source)
    assert plane.shape == (20, 30, 3) and plane.dtype == np.float32
    np.testing.assert_array_equal(plane, rgb.astype(np.float32))
    assert geometry.slice_shape == (20, 30)
    out = write_mask(np.ones((20, 30), np.uint8), geometry, tmp_path / "m.png")
    assert sitk.GetArrayFromImage(read_image(out)).shape == (20, 30)


def test_atomic_write_bytes(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    assert atomic_write_bytes(target, b"{}") == target
    atomic_write_bytes(target, b'{"a": 1}')
    assert target.read_bytes() == b'{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_atomic_path_removes_temp_on_error(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match="boom"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".onnx"
        tmp.write_bytes(b"half")
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_find_demo_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SAMFAST_DEMO_DATA", raising=False)
    folder = find_demo_data()
    assert folder == REPO / "data" / "brats_demo"
    assert (folder / "BraTS20_Demo_001" / T1CE.name).is_file()
    monkeypatch.setenv("SAMFAST_DEMO_DATA", str(tmp_path))
    assert find_demo_data() == tmp_path
    monkeypatch.setenv("SAMFAST_DEMO_DATA", str(tmp_path / "missing"))
    with pytest.raises(InputError) as excinfo:
        find_demo_data()
    assert "SAMFAST_DEMO_DATA" in one_line_input_error(excinfo)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_every_slice_is_the_plane_view(t1ce: sitk.Image, plane: str) -> None:
    """get_slice, the bench's plane view and SliceGeometry agree on each plane's slices (one view)."""
    from samfast.io.planes import from_plane_view, plane_view

    volume = sitk.GetArrayFromImage(t1ce).astype(np.float32)
    view = plane_view(volume, plane)
    for index in (0, view.shape[0] // 2, view.shape[0] - 1):
        np.testing.assert_array_equal(get_slice(t1ce, index, plane), view[index])
        assert SliceGeometry.from_image(t1ce, index, plane).slice_shape == view[index].shape
    np.testing.assert_array_equal(from_plane_view(view, plane), volume)


def test_read_volume_reads_files_and_refuses_what_is_not_a_3d_scalar(t1ce, tmp_path: Path) -> None:
    from samfast.io import read_volume

    image, series = read_volume(T1CE, scalar_3d=True)
    assert series is None and image.GetSize() == t1ce.GetSize()
    picture = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.uint8)), str(picture))
    assert read_volume(picture)[0].GetDimension() == 2
    with pytest.raises(InputError) as excinfo:
        read_volume(picture, scalar_3d=True)
    assert "need a 3D single-channel volume, got 2D" in one_line_input_error(excinfo)
