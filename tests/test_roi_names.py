"""ROI names as a clinic types them: non-ASCII names written in a character set that holds them (the
series' own where it suffices, else UTF-8) and read back intact, labels cut to their VR, and blank or
control-character names refused in one line before any work (CLI exit 2, service 4xx)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import TUMOUR_CORE
from dicom_fixtures import build_series, dciodvfy_errors, tumour_crop
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from samfast.cli import app
from samfast.clinical.dicom_seg import read_dicom_seg, write_dicom_seg
from samfast.clinical.dicom_values import fit
from samfast.clinical.rtstruct import check_roi_name, read_rtstruct_mask, write_rtstruct
from samfast.clinical.volume import load_volume
from samfast.errors import InputError
from samfast.serve.app import create_app

CASE = "BraTS20_Demo_001"
NAME = "Tumör Ödem 肿瘤"
BAD_NAMES = {
    "blank": "   ",
    "empty": "",
    "control character": "GTV\x07",
    "delete": "G\x7fTV",
    "line break": "GTV\nCTV",
    "backslash": "GTV\\CTV",  # DICOM's value separator
    "leading space": " GTV",
    "65 characters": "x" * 65,
    "66 bytes": "肿" * 22,
}


@pytest.fixture(scope="module")
def crop():
    return tumour_crop(CASE, slices=4, size=48)


@pytest.fixture(scope="module")
def base_series(crop, tmp_path_factory):
    return build_series(crop[0], tmp_path_factory.mktemp("names") / "series")


@pytest.fixture(scope="module")
def mask(crop):
    return np.isin(sitk.GetArrayFromImage(crop[1]), TUMOUR_CORE)


def _series_in(base, folder, character_set, patient: str):
    """A copy of ``base`` whose images declare ``character_set`` and hold ``patient`` as PatientName."""
    shutil.copytree(base, folder)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        if character_set:
            ds.SpecificCharacterSet = character_set
        ds.PatientName = patient
        ds.save_as(path)
    return load_volume(folder)


# (images' set, patient name, ROI name, set the RTSTRUCT and SEG must declare)
CASES = {
    "utf8 series": ("ISO_IR 192", "Müller^Zoë=李^华", NAME, "ISO_IR 192"),
    "latin1 series": ("ISO_IR 100", "Müller^Zoë", NAME, "ISO_IR 192"),
    "latin1 series, latin1 name": ("ISO_IR 100", "Müller^Zoë", "Tumör Ödem", "ISO_IR 100"),
    "default series": (None, "DOE^JANE", NAME, "ISO_IR 192"),
    "default series, ascii name": (None, "DOE^JANE", "GTV", None),
    # ISO 2022 with JIS X 0208 (Japanese): kept for an ASCII name; it lacks ö, so UTF-8 for NAME
    "iso 2022 series, ascii name": (
        ["", "ISO 2022 IR 87"],
        "Yamada^Tarou=山田^太郎",
        "GTV",
        ["", "ISO 2022 IR 87"],
    ),
    "iso 2022 series": (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎", NAME, "ISO_IR 192"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_names_are_read_back_intact_and_the_files_valid(case, base_series, mask, tmp_path):
    images_set, patient, name, expected_set = CASES[case]
    volume = _series_in(base_series, tmp_path / "series", images_set, patient)
    rt = write_rtstruct(mask, volume.series, tmp_path / "rt", name)
    seg = write_dicom_seg(mask, volume.series, tmp_path / "seg.dcm", name)
    assert dciodvfy_errors(rt) == [] and dciodvfy_errors(seg) == []
    structure, segmentation = pydicom.dcmread(rt), pydicom.dcmread(seg)
    for ds in (structure, segmentation):
        assert ds.get("SpecificCharacterSet") == expected_set
        assert str(ds.PatientName) == patient  # copied from the images, re-encoded intact
        assert name in ds.SeriesDescription
    assert structure.StructureSetROISequence[0].ROIName == name == structure.StructureSetName
    assert segmentation.SegmentSequence[0].SegmentLabel == name
    assert len((label := structure.StructureSetLabel).encode("utf-8")) <= 16 and name.startswith(label)
    assert np.array_equal(read_rtstruct_mask(rt, volume.series, name), mask)
    assert np.array_equal(read_dicom_seg(seg, volume.series), mask)


@pytest.mark.parametrize("name", ["Glioblastoma enhancing rim 2nd", "Ödem " * 10 + "GTV"])
def test_long_names_give_valid_files_with_a_short_label(name, base_series, mask, tmp_path):
    volume = load_volume(base_series)
    rt = write_rtstruct(mask, volume.series, tmp_path / "rt", name)
    seg = write_dicom_seg(mask, volume.series, tmp_path / "seg.dcm", name)
    assert dciodvfy_errors(rt) == [] and dciodvfy_errors(seg) == []
    structure = pydicom.dcmread(rt)
    assert structure.StructureSetLabel == fit(name, 16) and len(structure.StructureSetLabel) <= 16
    assert structure.StructureSetName == name == structure.StructureSetROISequence[0].ROIName
    assert pydicom.dcmread(seg).SegmentSequence[0].SegmentLabel == name


def test_labels_are_cut_at_a_word_boundary_within_characters_and_bytes():
    assert fit("Glioblastoma enhancing rim", 16) == "Glioblastoma"
    assert fit("Tumor core edema", 16) == "Tumor core edema"
    assert fit(NAME, 16) == "Tumör Ödem"  # 14 characters, but 19 bytes in UTF-8
    assert fit("abcdefghijklmnopqrstuvwxyz", 16) == "abcdefghijklmnop"
    assert fit("肿瘤" * 5, 16) == "肿瘤肿瘤肿"  # no word boundary: cut at the last whole character


@pytest.mark.parametrize("why", list(BAD_NAMES))
def test_bad_names_are_one_line(why):
    with pytest.raises(InputError) as refused:
        check_roi_name(BAD_NAMES[why])
    assert "\n" not in str(refused.value) and str(refused.value).startswith("ROI name ")


def test_good_names_pass():
    for name in (NAME, "GTV", "x" * 64, "肿" * 21, "PTV 60 Gy (boost)", "Ödem−rand"):
        assert check_roi_name(name) == name


def test_cli_refuses_bad_names_before_the_model_loads(base_series, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a name that is refused")

    monkeypatch.setattr("samfast.Predictor", no_model)
    out = tmp_path / "out"
    out.mkdir()
    for why in ("blank", "control character", "backslash", "66 bytes"):
        args = [base_series, "--box", 10, 10, 1, 40, 40, 2, "--rtstruct", out / "rt", "--seg", out / "s.dcm"]
        result = CliRunner().invoke(app, ["segment", *map(str, args), "--roi-name", BAD_NAMES[why]])
        assert result.exit_code == 2, (why, result.output, result.stderr)
        assert result.stderr.count("\n") == 1 and "ROI name" in result.stderr, result.stderr
        assert list(out.iterdir()) == []


def test_service_refuses_bad_names_with_a_4xx(base_series):
    # a stand-in model: the name is refused before the session's mask or the model is touched
    spec = SimpleNamespace(name="stand-in", embedding_shape=(256, 64, 64))
    predictor = SimpleNamespace(cache=None, spec=spec, describe=dict)
    predictor.with_cache = lambda cache: SimpleNamespace(cache=cache, spec=spec, describe=dict)
    key = {"X-API-Key": "test-key-0123456789abcdef"}
    with TestClient(create_app(predictor, key["X-API-Key"])) as client:
        reply = client.post("/sessions", json={"path": str(base_series)}, headers=key)
        assert reply.status_code == 200, reply.text
        url = f"/sessions/{reply.json()['session']}/rtstruct"
        # what the spec's pattern and length say is refused as not matching it (422) ...
        for why in ("blank", "control character", "backslash", "65 characters"):
            reply = client.post(url, json={"roi_name": BAD_NAMES[why]}, headers=key)
            assert reply.status_code == 422 and "roi_name" in reply.json()["detail"], (why, reply.text)
        # ... and the byte bound no pattern can express by the name check (400)
        reply = client.post(url, json={"roi_name": BAD_NAMES["66 bytes"]}, headers=key)
        assert reply.status_code == 400 and "ROI name" in reply.json()["detail"], reply.text
