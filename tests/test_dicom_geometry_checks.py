"""The series check shared by `segment` and `serve`, on series edited with pydicom from a good one:
a gantry tilt, two frames of reference, an image without position at either end, no frame of
reference, and a 1×1 decoy that must not size the service's budget. Each is refused in one line
before the model runs and before any pixel is decoded, and nothing is written.
"""

from __future__ import annotations

import io
import math
import shutil
import zipfile

import numpy as np
import pydicom
import pytest
from dicom_fixtures import build_series, tumour_crop
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from typer.testing import CliRunner

import samfast
from samfast.cli import app
from samfast.clinical.volume import load_volume
from samfast.errors import InputError
from samfast.serve.app import create_app
from samfast.serve.limits import Limits

CASE = "BraTS20_Demo_001"
SLICES, SIZE = 5, 64
KEY = "test-key-0123456789abcdef"
H = {"X-API-Key": KEY}
BOX = ["--box", 8, 8, 0, 56, 56, SLICES - 1]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return build_series(tumour_crop(CASE, slices=SLICES, size=SIZE)[0], tmp_path_factory.mktemp("g") / "good")


def _edited(good, folder, edit):
    """A copy of ``good`` whose slice k (files in z order) is changed by ``edit(k, ds)``; a file
    whose edit returns False is left out."""
    shutil.copytree(good, folder)
    for k, path in enumerate(sorted(folder.glob("slice_*.dcm"))):
        ds = pydicom.dcmread(path)
        edit(k, ds)
        ds.save_as(path)
    return folder


def _tilted(degrees):
    def edit(k, ds):  # each slice slides along the column direction, as a tilted gantry's do
        column = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
        shift = math.tan(math.radians(degrees)) * k * float(ds.SpacingBetweenSlices) * column
        ds.ImagePositionPatient = [float(p) + s for p, s in zip(ds.ImagePositionPatient, shift, strict=True)]

    return edit


def _two_frames():
    other = generate_uid()

    def edit(k, ds):
        if k >= 3:
            ds.FrameOfReferenceUID = other

    return edit


def _without(name, at):
    def edit(k, ds):
        if k == at:
            delattr(ds, name)

    return edit


def _without_everywhere(name):
    return lambda k, ds: delattr(ds, name)


# (variant, message the one line holds)
REFUSED = {
    "tilted": (_tilted(15.0), "series is gantry-tilted by 15.0° (slice positions do not lie along"),
    "two frames": (_two_frames(), "slices in 2 frames of reference"),
    "no position first": (
        _without("ImagePositionPatient", 0),
        "slice_0000.dcm has no valid ImagePositionPatient",
    ),
    "no position last": (
        _without("ImagePositionPatient", SLICES - 1),
        f"slice_{SLICES - 1:04d}.dcm has no valid ImagePositionPatient",
    ),
    "no orientation": (
        _without("ImageOrientationPatient", 2),
        "slice_0002.dcm has no valid ImageOrientationPatient",
    ),
}


@pytest.fixture(scope="module")
def refused(good, tmp_path_factory):
    base = tmp_path_factory.mktemp("refused")
    return {
        name: (_edited(good, base / name.replace(" ", "_"), edit), message)
        for name, (edit, message) in REFUSED.items()
    }


@pytest.fixture(scope="module")
def no_frame(good, tmp_path_factory):
    return _edited(
        good, tmp_path_factory.mktemp("nofor") / "series", _without_everywhere("FrameOfReferenceUID")
    )


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model is built: every refusal here comes before the encoder could run."""
    built = []

    def predictor(*args, **kwargs):
        built.append(args)
        raise AssertionError("the model was built")

    monkeypatch.setattr(samfast, "Predictor", predictor)
    return built


def _segment(*args):
    result = CliRunner().invoke(app, ["segment", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def _one_line_exit_2(result, message):
    code, stdout, stderr = result
    assert code == 2, (stdout, stderr)
    assert stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr, stderr


# -- the library: load_volume ---------------------------------------------------------------------


@pytest.mark.parametrize("name", REFUSED)
def test_bad_series_are_refused_in_one_line(refused, name):
    folder, message = refused[name]
    with pytest.raises(InputError) as caught:
        load_volume(folder)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_rounded_positions_and_a_small_tilt_within_a_tenth_of_a_pixel_pass(good, tmp_path):
    # Rounding of oblique positions (±0.004 mm) and a tilt moving the last slice 0.05 px sideways.
    jitter = np.random.default_rng(0).uniform(-0.004, 0.004, (SLICES, 3))

    def edit(k, ds):
        _tilted(math.degrees(math.atan(0.05 / ((SLICES - 1) * float(ds.SpacingBetweenSlices)))))(k, ds)
        ds.ImagePositionPatient = [
            float(p) + j for p, j in zip(ds.ImagePositionPatient, jitter[k], strict=True)
        ]

    volume = load_volume(_edited(good, tmp_path / "series", edit))
    assert volume.shape == (SLICES, SIZE, SIZE)


def test_small_tilt_past_the_tolerance_is_refused_with_its_angle(good, tmp_path):
    with pytest.raises(InputError, match=r"gantry-tilted by 2\.0°"):
        load_volume(_edited(good, tmp_path / "series", _tilted(2.0)))


def test_dicomdir_text_and_a_seg_in_the_folder_are_ignored(good, tmp_path):
    from pydicom.fileset import FileSet

    folder = tmp_path / "series"
    shutil.copytree(good, folder)
    (folder / "README.txt").write_text("not DICOM")
    fileset = FileSet()
    fileset.add(pydicom.dcmread(good / "slice_0000.dcm"))
    fileset.write(tmp_path / "fs")
    shutil.copy(tmp_path / "fs" / "DICOMDIR", folder / "DICOMDIR")
    seg = pydicom.dcmread(good / "slice_0001.dcm")  # a SEG written next to its series
    seg.SOPClassUID = seg.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    seg.SeriesInstanceUID, seg.SOPInstanceUID = generate_uid(), generate_uid()
    seg.save_as(folder / "seg.dcm")
    assert load_volume(folder).shape == (SLICES, SIZE, SIZE)


# -- the CLI: exit 2 before the model runs, nothing written ---------------------------------------


@pytest.mark.parametrize("name", REFUSED)
def test_segment_refuses_bad_series_before_the_model(refused, name, tmp_path, no_model):
    folder, message = refused[name]
    out = tmp_path / "out"
    out.mkdir()
    args = [folder, *BOX, "--out", out / "m.nii.gz", "--rtstruct", out / "rt", "--seg", out / "s.dcm"]
    _one_line_exit_2(_segment(*args), message)
    assert no_model == [] and list(out.iterdir()) == []


@pytest.mark.parametrize(
    "outputs, named", [(["--rtstruct", "rt"], "--rtstruct"), (["--seg", "s.dcm"], "--seg")]
)
def test_rtstruct_and_seg_without_a_frame_of_reference_are_refused_before_the_model(
    no_frame, outputs, named, tmp_path, no_model
):
    out = tmp_path / "out"
    out.mkdir()
    args = [no_frame, *BOX, outputs[0], out / outputs[1], "--out", out / "m.nii.gz"]
    _one_line_exit_2(
        _segment(*args), f"{named} cannot reference this series: its images have no FrameOfReferenceUID"
    )
    assert no_model == [] and list(out.iterdir()) == []


@pytest.mark.parametrize("name", ["StudyInstanceUID", "SOPInstanceUID"])
def test_other_references_an_output_needs_are_checked_the_same_way(good, name, tmp_path, no_model):
    folder = _edited(good, tmp_path / "series", _without(name, 1))
    out = tmp_path / "out"
    out.mkdir()
    _one_line_exit_2(_segment(folder, *BOX, "--rtstruct", out / "rt"), f"its images have no {name}")
    assert no_model == [] and list(out.iterdir()) == []


def test_without_a_frame_of_reference_the_nifti_alone_is_written(no_frame, tmp_path):
    out = tmp_path / "m.nii.gz"
    tiny = ["--model", "tiny_vit_test", "--random-weights", "--backend", "torch", "--allow-empty"]
    code, stdout, stderr = _segment(no_frame, *BOX, "--out", out, *tiny)
    assert code == 0, stderr
    assert out.exists() and load_volume(out).shape == (SLICES, SIZE, SIZE)


# -- the service: 4xx by path and by upload, budgets from the stack read --------------------------


class _Predictor:
    """Enough of a Predictor for the routes used here: none of them runs the model."""

    cache = None
    spec = type("Spec", (), {"name": "stub", "embedding_shape": (1, 1, 1)})()

    def describe(self):
        return {"model": "stub"}

    def with_cache(self, cache):  # the service's own predictor, as Predictor.with_cache
        other = _Predictor()
        other.cache = cache
        return other


def _client(limits=None):
    return TestClient(create_app(_Predictor(), KEY, limits=limits))


def _zip(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return buffer.getvalue()


def _open_both(client, folder):
    """(reply opening ``folder`` by path, reply uploading it as a zip)."""
    by_path = client.post("/sessions", json={"path": str(folder)}, headers=H)
    files = {"file": ("series.zip", _zip(folder), "application/zip")}
    return by_path, client.post("/sessions/upload", files=files, headers=H)


@pytest.mark.parametrize("name", REFUSED)
def test_serve_refuses_bad_series_by_path_and_upload(refused, name):
    folder, message = refused[name]
    message = message.split(".dcm")[-1]  # an upload's files are renamed; the rest of the line holds
    with _client() as client:
        for reply in _open_both(client, folder):
            assert reply.status_code == 400, reply.text
            assert message in reply.json()["detail"]


def test_serve_without_a_frame_of_reference_exports_nifti_and_refuses_rtstruct(no_frame):
    with _client() as client:
        for reply in _open_both(client, no_frame):
            assert reply.status_code == 200, reply.text
            url = f"/sessions/{reply.json()['session']}"
            rtstruct = client.post(f"{url}/rtstruct", json={}, headers=H)
            assert rtstruct.status_code == 400, rtstruct.text
            assert "RTSTRUCT export cannot reference this series" in rtstruct.json()["detail"]
            assert "FrameOfReferenceUID" in rtstruct.json()["detail"]
            assert client.get(f"{url}/mask", headers=H).status_code == 200


def _decoy(good, folder, same_series: bool):
    """``good`` plus 000_thumb.dcm, a 1×1 image without position (first by name), in the same
    series or another one."""
    shutil.copytree(good, folder)
    ds = pydicom.dcmread(good / "slice_0000.dcm")
    ds.Rows = ds.Columns = 1
    ds.PixelData = b"\0\0"
    del ds.ImagePositionPatient
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if not same_series:
        ds.SeriesInstanceUID = generate_uid()
    ds.save_as(folder / "000_thumb.dcm")
    return folder


@pytest.mark.parametrize("same_series", [True, False], ids=["same series", "another series"])
def test_a_small_decoy_file_cannot_lift_the_budget(good, tmp_path, same_series):
    folder = _decoy(good, tmp_path / "series", same_series)
    limits = Limits(max_voxels=SLICES * SIZE * SIZE - 1)  # the stack is one voxel over
    with _client(limits) as client:
        for reply in _open_both(client, folder):
            assert reply.status_code == 413, reply.text
            assert f"slices of {SIZE}x{SIZE}, more than the limit" in reply.json()["detail"]
    with _client() as client:  # within budget the decoy is part of the folder, and refused as such
        by_path, upload = _open_both(client, folder)
        assert by_path.status_code == upload.status_code == 400
        detail = by_path.json()["detail"]
        assert (
            "000_thumb.dcm has no valid ImagePositionPatient" if same_series else "holds 2 DICOM series"
        ) in detail


def test_the_memory_budget_counts_every_slice_of_the_stack(good, tmp_path):
    folder = _decoy(good, tmp_path / "series", same_series=True)
    # image + float32 input + mask + the datasets' pixel copy: 2 * 2 + 4 + 1 bytes a voxel
    limits = Limits(session_bytes=SLICES * SIZE * SIZE * 9 - 1)
    with _client(limits) as client:
        for reply in _open_both(client, folder):
            assert reply.status_code == 413 and "needs" in reply.json()["detail"], reply.text
