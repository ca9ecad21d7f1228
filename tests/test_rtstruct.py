"""RT Structure Sets read back by independent readers as planning systems read them: plastimatch
(voxel centre inside the polygon, --xor-contours), dciodvfy (the IOD's Type 1/2 attributes), a
volume computed from ContourData alone; write errors, empty masks and C-STORE to dcmtk's storescp."""

from __future__ import annotations

import contextlib
import shutil
import socket

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import CASES, TUMOUR_CORE
from dicom_fixtures import (
    GEOMETRIES,
    assert_received,
    build_series,
    dciodvfy_errors,
    demo_images,
    free_port,
    mounted_tmpfs,
    plastimatch_masks,
    storescp,
    tumour_crop,
    with_geometry,
)
from independent import contour_volume_mm3
from matplotlib.path import Path as PolygonPath

from samfast.clinical.contours import mask_polygons, polygon_area, rasterise_xor
from samfast.clinical.dicom_seg import read_dicom_seg, write_dicom_seg
from samfast.clinical.rtstruct import build_rtstruct, read_rtstruct_mask, write_rtstruct
from samfast.clinical.send import SendError, send_files
from samfast.clinical.volume import load_volume, write_volume_mask
from samfast.errors import InputError
from samfast.eval.metrics import dice


def test_polygons_are_simple_closed_and_give_back_random_masks_exactly():
    rng = np.random.default_rng(14)
    yy, xx = np.mgrid[:14, :17]
    centres = np.stack([xx.ravel(), yy.ravel()], axis=1)
    for trial in range(60):
        plane = rng.random((14, 17)) < rng.uniform(0.1, 0.9)
        polygons = mask_polygons(plane)
        for points in polygons:
            assert len(points) >= 4 and len({tuple(p) for p in points}) == len(points)  # closed, simple
            assert np.all(np.abs(points - np.round(points) - 0.5) % 1 < 1e-9)  # on voxel edges
        # matplotlib's point-in-polygon, XOR over the contours, is an independent rasteriser
        inside = np.zeros(len(centres), bool)
        for points in polygons:
            inside ^= PolygonPath(points).contains_points(centres)
        assert np.array_equal(inside.reshape(plane.shape), plane), trial
        assert np.array_equal(rasterise_xor(polygons, plane.shape), plane), trial
        # outer boundaries run one way and holes the other: the signed areas add up to the pixel count
        assert -sum(polygon_area(p) for p in polygons) == pytest.approx(plane.sum())


def _hand_made() -> dict[str, np.ndarray]:
    shape = (6, 20, 24)
    masks = {name: np.zeros(shape, bool) for name in ("voxel", "line", "diagonal", "block", "ring", "notch")}
    masks["voxel"][2, 5, 7] = True
    masks["line"][3, 8, 4:14] = True
    for k in range(5):
        masks["diagonal"][1, 4 + k, 6 + k] = True  # 8-connected: the pixels touch at corners only
    masks["block"][1:6, 5:15, 7:17] = True
    masks["ring"][2:5, 4:14, 6:16] = True
    masks["ring"][2:5, 7:11, 9:13] = False
    # a ring whose hole touches the outside at one corner: the boundary pinches there
    masks["notch"][2, 4:7, 4:7] = True
    masks["notch"][2, 5, 5] = masks["notch"][2, 6, 6] = False
    return masks


@pytest.fixture(scope="module")
def small_series(tmp_path_factory):
    """A 24 × 20 × 6 MR series with non-square pixels, for the hand-made masks."""
    noise = np.random.default_rng(0).integers(0, 800, (6, 20, 24)).astype(np.int16)
    image = sitk.GetImageFromArray(noise)
    image.SetSpacing((0.8, 1.2, 2.0))
    image.SetOrigin((-10.0, 5.5, 30.0))
    return build_series(image, tmp_path_factory.mktemp("small") / "series")


@pytest.mark.parametrize("name", list(_hand_made()))
def test_hand_made_masks_come_back_from_plastimatch_exactly(name, small_series, tmp_path):
    mask = _hand_made()[name]
    volume = load_volume(small_series)
    path = write_rtstruct(mask, volume.series, tmp_path / "rt", "GTV", model="test")
    back = plastimatch_masks(path, small_series, tmp_path / "pm")["GTV"]
    assert np.array_equal(sitk.GetArrayFromImage(back).astype(bool), mask)
    assert np.array_equal(read_rtstruct_mask(path, volume.series, "GTV"), mask)
    contours = pydicom.dcmread(path).ROIContourSequence[0].ContourSequence
    assert min(int(c.NumberOfContourPoints) for c in contours) >= 4
    assert all(len(c.ContourData) == 3 * int(c.NumberOfContourPoints) for c in contours)
    spacing = volume.image.GetSpacing()
    expected = mask.sum() * spacing[0] * spacing[1] * spacing[2]
    assert contour_volume_mm3(path, spacing[2]) == pytest.approx(expected, rel=1e-6)
    assert dciodvfy_errors(path) == []


def _variant(name: str) -> tuple[sitk.Image, sitk.Image, str]:
    """(image, label, which structure): both whole demo cases (tumour core), and a crop of case 001
    in each geometry (enhancing tumour: a rim around necrosis, so holes on most slices)."""
    if name in CASES:
        return (*demo_images(name), "tumour core")
    image, label = tumour_crop(CASES[0], slices=16, size=128)
    spacing, direction = GEOMETRIES[name]
    return with_geometry(image, spacing, direction), with_geometry(label, spacing, direction), "enhancing"


@pytest.mark.parametrize("name", [*CASES, *GEOMETRIES])
def test_planning_system_rasterisation_gives_back_the_nifti_mask(name, tmp_path):
    image, label, structure = _variant(name)
    series = build_series(image, tmp_path / "series")
    volume = load_volume(series)
    # the label on the grid samfast read (a descending series is read back ascending): exact,
    # since the two grids hold the same voxel centres
    label = sitk.Resample(label, volume.image, sitk.Transform(), sitk.sitkNearestNeighbor)
    values = sitk.GetArrayFromImage(label)
    mask = np.isin(values, TUMOUR_CORE) if structure == "tumour core" else values == 4
    nifti = write_volume_mask(mask, volume, tmp_path / "mask.nii.gz")
    rt = write_rtstruct(mask, volume.series, tmp_path / "rt", "GTV", model="test")
    seg = write_dicom_seg(mask, volume.series, tmp_path / "seg.dcm", "GTV", model="test")

    written = sitk.ReadImage(str(nifti))
    planned = plastimatch_masks(rt, series, tmp_path / "pm")["GTV"]
    for get in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(planned, get)(), getattr(written, get)(), atol=1e-4)
    planned_mask = sitk.GetArrayFromImage(planned).astype(bool)
    written_mask = sitk.GetArrayFromImage(written).astype(bool)
    spacing = volume.image.GetSpacing()
    voxel_volume = written_mask.sum() * spacing[0] * spacing[1] * spacing[2]
    ratio = contour_volume_mm3(rt, spacing[2]) / voxel_volume
    errors = {"rtstruct": dciodvfy_errors(rt), "seg": dciodvfy_errors(seg)}
    print(
        f"\n{name} ({structure}, {'x'.join(map(str, volume.image.GetSize()))}): plastimatch --xor-contours "
        f"Dice {dice(planned_mask, written_mask):.6f}, voxels {planned_mask.sum()} vs NIfTI "
        f"{written_mask.sum()}, polygon/voxel volume {ratio:.6f}, dciodvfy errors "
        f"RTSTRUCT {len(errors['rtstruct'])} SEG {len(errors['seg'])}"
    )
    assert written_mask.sum() > 1000 and mask.any(axis=(1, 2)).sum() >= 5
    assert np.array_equal(planned_mask, written_mask)  # so Dice 1 and equal counts
    assert np.array_equal(read_rtstruct_mask(rt, volume.series, "GTV"), written_mask)
    assert np.array_equal(read_dicom_seg(seg, volume.series), written_mask)
    assert abs(ratio - 1) < 0.005
    assert errors == {"rtstruct": [], "seg": []}


def _every_value(dataset, vr: str):
    for element in dataset.iterall():
        if element.VR == vr and element.value is not None:
            yield from element.value if element.VM > 1 else [element.value]


def test_structure_set_is_conformant_and_carries_the_study(small_series, tmp_path):
    folder = tmp_path / "series"
    shutil.copytree(small_series, folder)
    study = {
        "AccessionNumber": "A20261201",
        "ReferringPhysicianName": "Curie^Marie",
        "StudyID": "S77",
        "StudyDescription": "Brain MR",
        "PatientAge": "054Y",
    }
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        for keyword, value in study.items():
            setattr(ds, keyword, value)
        ds.SeriesNumber = 901  # the RTSTRUCT's usual number: it must move
        ds.save_as(path)
    volume = load_volume(folder)
    mask = _hand_made()["ring"]
    name = "Glioblastoma enhancing rim, second reading after contrast"  # > 16 characters
    path = write_rtstruct(mask, volume.series, tmp_path / "rt", name, roi_type="CTV", model="litemedsam")
    ds = pydicom.dcmread(path)
    image = volume.series.datasets[0]
    assert dciodvfy_errors(path) == []
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert {k: str(ds[k].value) for k in study} == study
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "FrameOfReferenceUID"):
        assert str(ds[keyword].value) == str(image[keyword].value)
    for keyword in ("PositionReferenceIndicator", "OperatorsName", "StructureSetDate", "PatientSex"):
        assert keyword in ds
    assert (ds.Manufacturer, ds.ManufacturerModelName) == ("samfast", "samfast segment")
    assert ds.SoftwareVersions and "InstitutionName" not in ds
    assert int(ds.SeriesNumber) != int(image.SeriesNumber)
    assert ds.SeriesDescription.startswith("samfast RTSTRUCT") and len(ds.SeriesDescription) <= 64
    assert len(ds.StructureSetLabel) <= 16 and ds.StructureSetName == name
    roi = ds.StructureSetROISequence[0]
    assert roi.ROIName == name and roi.ROIGenerationAlgorithm == "SEMIAUTOMATIC"
    assert "litemedsam" in roi.ROIGenerationDescription
    assert ds.RTROIObservationsSequence[0].RTROIInterpretedType == "CTV"
    assert all(len(str(v)) <= 16 for v in _every_value(ds, "DS"))
    assert not any("Qurit" in str(v) or "rt-utils" in str(v) for v in _every_value(ds, "LO"))


def test_an_empty_mask_is_refused_unless_allowed(small_series, tmp_path):
    volume = load_volume(small_series)
    empty = np.zeros(volume.shape, bool)
    with pytest.raises(InputError, match="the mask is empty.*--allow-empty"):
        write_rtstruct(empty, volume.series, tmp_path / "rt", "GTV")
    with pytest.raises(InputError, match="the mask is empty"):
        write_dicom_seg(empty, volume.series, tmp_path / "seg.dcm", "GTV")
    assert list(tmp_path.iterdir()) == []
    rt = write_rtstruct(empty, volume.series, tmp_path / "rt", "GTV", allow_empty=True)
    seg = write_dicom_seg(empty, volume.series, tmp_path / "seg.dcm", "GTV", allow_empty=True)
    ds = pydicom.dcmread(rt)
    assert ds.StructureSetROISequence[0].ROIName == "GTV"
    assert "ContourSequence" not in ds.ROIContourSequence[0]  # Type 3: left out, not written empty
    assert dciodvfy_errors(rt) == [] and dciodvfy_errors(seg) == []
    assert not read_dicom_seg(seg, volume.series).any()
    assert not read_rtstruct_mask(rt, volume.series, "GTV").any()


def test_a_full_disk_or_read_only_folder_is_one_error_and_leaves_nothing(small_series, tmp_path):
    volume = load_volume(small_series)
    mask = _hand_made()["block"]
    with mounted_tmpfs(tmp_path / "full", "size=64k") as full:
        filler = full / "someone-elses.dat"  # fill the disk but for a few bytes
        with contextlib.suppress(OSError), open(filler, "wb") as handle:
            handle.write(b"\0" * 65536)
        with pytest.raises(InputError, match="No space left on device") as error:
            write_rtstruct(mask, volume.series, full / "rt", "GTV")
        assert "\n" not in str(error.value)
        with pytest.raises(InputError, match="No space left on device"):
            write_dicom_seg(mask, volume.series, full / "seg.dcm", "GTV")
        assert list(full.iterdir()) == [filler]  # the rt folder written into is gone too
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        with pytest.raises(InputError, match="Read-only file system"):
            write_rtstruct(mask, volume.series, read_only / "rt", "GTV")
        with pytest.raises(InputError, match="Read-only file system"):
            write_dicom_seg(mask, volume.series, read_only / "seg.dcm", "GTV")
        assert list(read_only.iterdir()) == []


def test_c_store_to_storescp_delivers_the_files_unchanged(small_series, tmp_path):
    volume = load_volume(small_series)
    mask = _hand_made()["ring"]
    rt = write_rtstruct(mask, volume.series, tmp_path / "rt", "GTV")
    seg = write_dicom_seg(mask, volume.series, tmp_path / "seg.dcm", "GTV")
    with storescp(tmp_path / "received") as node:
        sent = send_files([rt, seg], node, timeout=10)
    assert len(sent) == 2
    assert_received(tmp_path / "received", [rt, seg])


def test_refusals_and_time_outs_are_one_send_error(small_series, tmp_path):
    volume = load_volume(small_series)
    rt = write_rtstruct(_hand_made()["voxel"], volume.series, tmp_path / "rt", "GTV")
    with storescp(tmp_path / "received", "--refuse") as node:
        with pytest.raises(SendError, match="refused the association"):
            send_files([rt], node, timeout=5)
    with pytest.raises(SendError, match=r"cannot reach .*Connection refused"):
        send_files([rt], f"PLANNING@127.0.0.1:{free_port()}", timeout=2)
    with socket.socket() as silent:  # accepts the connection, never answers the association request
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(SendError, match=r"did not answer \(within 1 s\)"):
            send_files([rt], f"PLANNING@127.0.0.1:{silent.getsockname()[1]}", timeout=1)
    assert rt.exists() and pydicom.dcmread(rt).Modality == "RTSTRUCT"


def test_send_addresses_are_checked():
    from samfast.clinical.send import parse_node

    assert str(parse_node("PLANNING@10.0.0.2:104")) == "PLANNING@10.0.0.2:104"
    assert parse_node("AE@[::1]:11112").host == "::1"
    for bad in ("PLANNING@host", "@host:104", "A_TITLE_LONGER_THAN_16@host:104", "AE@host:70000"):
        with pytest.raises(InputError, match="--send"):
            parse_node(bad)


def test_build_refuses_an_unknown_roi_type(small_series):
    volume = load_volume(small_series)
    with pytest.raises(InputError, match="ROI type 'TUMOR'"):
        build_rtstruct(_hand_made()["voxel"], volume.series, "GTV", roi_type="TUMOR")
