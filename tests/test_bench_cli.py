"""`samfast bench brats` and `samfast eval` end to end: every protocol, every output, resumable,
reproducible, robust to bad cases. The tiny random-weights SAM keeps most runs to seconds; parity runs
use the real LiteMedSAM weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DEMO
from independent import putz_by_hand
from typer.testing import CliRunner

from samfast import Predictor
from samfast.cli import app
from samfast.eval.parity import RUN_PARITY
from samfast.eval.slicing import plane_view
from samfast.preprocess import normalize_mr_putz

CASE = "BraTS20_Demo_001"
TINY = ("--model", "tiny_vit_test", "--random-weights")


def crop_case(case: str, margin: int = 6) -> tuple[sitk.Image, sitk.Image]:
    """A demo case cropped to its tumour core (+ margin): real data, a fraction of the slices."""
    image = sitk.ReadImage(str(DEMO / case / f"{case}_t1ce.nii.gz"))
    label = sitk.ReadImage(str(DEMO / case / f"{case}_seg.nii.gz"))
    z, y, x = np.nonzero(np.isin(sitk.GetArrayFromImage(label), (1, 4)))
    lo = [max(int(v.min()) - margin, 0) for v in (x, y, z)]
    hi = [int(v.max()) + margin + 1 for v in (x, y, z)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    return image[box], label[box]


def write_case(root, name: str, image: sitk.Image, label: sitk.Image, sep: str = "_", mod: str = "t1ce"):
    (root / name).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(root / name / f"{name}{sep}{mod}.nii.gz"))
    sitk.WriteImage(label, str(root / name / f"{name}{sep}seg.nii.gz"))


@pytest.fixture(scope="module")
def cropped() -> tuple[sitk.Image, sitk.Image]:
    return crop_case(CASE)


@pytest.fixture()
def one_case(tmp_path, cropped):
    root = tmp_path / "brats"
    write_case(root, "BraTS20_Training_001", *cropped)
    (root / "name_mapping.csv").write_text("Grade,BraTS_2020_subject_ID\nLGG,BraTS20_Training_001\n")
    return root


def bench(*args):
    return CliRunner().invoke(app, ["bench", "brats", *map(str, args)], env={"COLUMNS": "200"})


def rows(out, kind=None):
    found = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [r for r in found if kind is None or r["row"] == kind]


def test_all_protocols_write_every_output_and_repeat_byte_for_byte(one_case, tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / name
        args = (*TINY, "--data", one_case, "--out", out, "--protocol", "all", "--slices-per-case", 2)
        result = bench(*args, "--seed", seed)
        assert result.exit_code == 0, result.output
        runs[name] = (out / "results.jsonl").read_bytes()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]  # random prompt choices follow the seed
    out = tmp_path / "a"
    assert "RANDOM WEIGHTS" in result.stdout
    for name in (
        "summary.json",
        "summary.md",
        "iou_vs_points.png",
        "best_iou_vs_area.png",
        "best_iou_by_grade.png",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    protocols = summary["protocols"]
    assert set(protocols) == {
        "box", "box-jitter", "box-margin", "box-3d", "points-putz", "points-mazurowski", "box-points"
    }  # fmt: skip
    putz = protocols["points-putz"]["axial"]
    assert putz["slices"] == 2 and set(putz["selections"]) == {"oracle", "suggested", "previous"}
    assert len(putz["curves"]["oracle"]) == 9 and list(putz["by_grade"]) == ["LGG"]
    for name in ("suggested", "previous"):
        assert putz["selections"]["oracle"]["iou"]["mean"] >= putz["selections"][name]["iou"]["mean"]
    assert summary["volumes"]["points-putz"]["axial"]["oracle"]["dice"]["n"] == 1
    steps = rows(out, "step")
    assert {len(r["points"]) for r in steps if r["protocol"] == "points-putz"} == set(range(1, 10))
    assert all(r["area_gt_mm2"] > 0 and r["grade"] == "LGG" for r in steps)
    report = (out / "summary.md").read_text()
    assert "previous-slice" in report and "| points-putz | axial |" in report


def test_interrupted_run_resumes_to_the_same_bytes(one_case, tmp_path):
    args = (*TINY, "--data", one_case, "--protocol", "points-putz,box", "--slices-per-case", 3)
    assert bench(*args, "--out", tmp_path / "full").exit_code == 0
    complete = (tmp_path / "full" / "results.jsonl").read_bytes()
    out = tmp_path / "cut"
    assert bench(*args, "--out", out).exit_code == 0
    lines = complete.decode().splitlines()
    # Killed in the middle of a slice: its first step rows are there, then a torn line.
    (out / "results.jsonl").write_text("\n".join(lines[:12]) + "\n" + lines[12][:50])
    result = bench(*args, "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "results.jsonl").read_bytes() == complete


def test_tri_planar_vote_and_cropped_slices(one_case, tmp_path):
    out = tmp_path / "tri"
    args = (*TINY, "--data", one_case, "--out", out, "--protocol", "box", "--plane", "tri", "--crop")
    result = bench(*args, "--slices-per-case", 2)
    assert result.exit_code == 0, result.output
    assert {r["plane"] for r in rows(out, "slice")} == {"axial", "coronal", "sagittal"}
    volumes = json.loads((out / "summary.json").read_text())["volumes"]["box"]
    assert set(volumes) == {"axial", "coronal", "sagittal", "tri"}
    assert 0.0 <= volumes["tri"]["oracle"]["dice"]["mean"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["crop_margin_mm"] == 20.0


def test_unseen_brats2023_layout_matches_an_independent_putz_implementation(tmp_path):
    # BraTS 2023 naming and labels (enhancing tumour 3), from the other demo case flipped left-right:
    # a folder the project has never seen.
    image, label = crop_case("BraTS20_Demo_002")
    labels = sitk.GetArrayFromImage(label)
    labels[labels == 4] = 3
    relabelled = sitk.GetImageFromArray(labels[:, :, ::-1].copy())
    relabelled.CopyInformation(label)
    flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[:, :, ::-1].copy())
    flipped.CopyInformation(image)
    root = tmp_path / "brats2023"
    write_case(root, "BraTS-GLI-00042-000", flipped, relabelled, sep="-", mod="t1c")
    out = tmp_path / "run"
    result = bench(*TINY, "--data", root, "--out", out, "--protocol", "all", "--slices-per-case", 3)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"]["evaluated"] == 1 and len(summary["protocols"]) == 7
    volume = normalize_mr_putz(sitk.GetArrayFromImage(flipped).astype(np.float32))
    truth = np.isin(labels[:, :, ::-1], (1, 3))
    predictor = Predictor("tiny_vit_test", backend="onnxruntime", random_weights=True)
    putz = [r for r in rows(out, "step") if r["protocol"] == "points-putz"]
    checked = 0
    for z in sorted({r["slice"] for r in putz}):
        predictor.set_image(plane_view(volume, "axial")[z])
        expected = putz_by_hand(predictor, truth[z])
        mine = [r for r in putz if r["slice"] == z]
        assert [r["points"] for r in mine] == [points for points, _ in expected]
        for row, (_, ious) in zip(mine, expected, strict=True):
            np.testing.assert_allclose(row["ious"], ious, atol=1e-9)
        checked += 1
    assert checked == 3


def test_compare_torch_keeps_parity_on_real_weights(one_case, tmp_path):
    out = tmp_path / "parity"
    args = ("--data", one_case, "--out", out, "--protocol", "box,points-putz", "--slices-per-case", 4)
    result = bench(*args, "--compare", "torch")
    assert result.exit_code == 0, result.output
    parity = json.loads((out / "summary.json").read_text())["parity"]
    for protocol in ("box", "points-putz"):
        assert parity[protocol]["backend"] == "torch" and parity[protocol]["slices"] == 4
        assert parity[protocol]["delta_mean_iou"] <= RUN_PARITY.max_delta_mean_iou
        assert parity[protocol][RUN_PARITY.fraction_key] >= RUN_PARITY.min_fraction
        assert not RUN_PARITY.failed(parity[protocol])
    # LiteMedSAM was trained on boxes: the box protocol beats a single point by far.
    protocols = json.loads((out / "summary.json").read_text())["protocols"]
    one_point = protocols["points-putz"]["axial"]["curves"]["oracle"][0]
    assert protocols["box"]["axial"]["selections"]["oracle"]["iou"]["mean"] > one_point + 0.2


def test_bad_cases_are_skipped_counted_and_reported(one_case, cropped, tmp_path):
    image, label = cropped
    write_case(one_case, "BraTS20_Training_002", image, label)
    (one_case / "BraTS20_Training_002" / "BraTS20_Training_002_t1ce.nii.gz").unlink()  # missing modality
    write_case(one_case, "BraTS20_Training_003", image[:, :, 1:], label)  # shape mismatch
    empty = sitk.Image(label.GetSize(), label.GetPixelID())
    empty.CopyInformation(label)
    write_case(one_case, "BraTS20_Training_004", image, empty)  # no target
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    values[2, 3, 4] = np.nan
    nan_image = sitk.GetImageFromArray(values)
    nan_image.CopyInformation(image)
    write_case(one_case, "BraTS20_Training_005", nan_image, label)
    out = tmp_path / "run"
    result = bench(*TINY, "--data", one_case, "--out", out, "--slices-per-case", 1)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"]["evaluated"] == 1, summary["cases"]
    reasons = {s["case"]: s["reason"] for s in summary["cases"]["skipped"]}
    assert "missing modality" in reasons["BraTS20_Training_002"]
    assert (
        "label" in reasons["BraTS20_Training_003"]
        and "BraTS20_Training_003" in reasons["BraTS20_Training_003"]
    )
    assert "no target voxels" in reasons["BraTS20_Training_004"]
    assert "NaN" in reasons["BraTS20_Training_005"]
    assert "skipped: 4" in (out / "summary.md").read_text()
    assert "skipped BraTS20_Training_005" in result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--data", "{tmp}/absent"), "no such data folder"),
        (("--data", "{tmp}"), "no BraTS cases"),
        (("--target", "tumour"), "target 'tumour'"),
        (("--protocol", "clicks"), "protocol 'clicks'"),
        (("--plane", "oblique"), "plane 'oblique'"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(one_case, tmp_path, extra, message):
    args = [str(a).replace("{tmp}", str(tmp_path / "empty")) for a in extra]
    (tmp_path / "empty").mkdir()
    if "--data" not in args:
        args += ["--data", str(one_case)]
    result = bench(*TINY, "--out", tmp_path / "run", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_results_of_another_configuration_are_not_mixed(one_case, tmp_path):
    args = (*TINY, "--data", one_case, "--out", tmp_path / "run", "--slices-per-case", 1)
    assert bench(*args).exit_code == 0
    result = bench(*args, "--target", "wt")
    assert result.exit_code == 2 and "another run" in result.stderr and "settings" in result.stderr
    assert bench(*args, "--target", "wt", "--fresh").exit_code == 0


def test_eval_on_generic_pairs_from_folders_and_csv(cropped, tmp_path):
    image, label = cropped
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    sitk.WriteImage(image, str(tmp_path / "images" / "patient7.nrrd"))
    sitk.WriteImage(sitk.Cast(label > 0, sitk.sitkUInt8), str(tmp_path / "labels" / "patient7_seg.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "images" / "unlabelled.mha"))
    common = (*TINY, "--protocol", "box", "--slices-per-case", 2)
    out = tmp_path / "folders"
    result = CliRunner().invoke(
        app, ["eval", "--images", tmp_path / "images", "--labels", tmp_path / "labels", "--out", out, *common]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"]["evaluated"] == 1 and summary["protocols"]["box"]["axial"]["slices"] == 2
    assert summary["cases"]["skipped"][0]["case"] == "unlabelled"
    (tmp_path / "pairs.csv").write_text(
        "case,image,label,grade\np7,images/patient7.nrrd,labels/patient7_seg.nii.gz,HGG\n"
    )
    out = tmp_path / "csv"
    result = CliRunner().invoke(app, ["eval", "--csv", tmp_path / "pairs.csv", "--out", out, *common])
    assert result.exit_code == 0, result.output
    assert {r["grade"] for r in rows(out, "slice")} == {"HGG"}
    result = CliRunner().invoke(app, ["eval", "--out", out, *common])
    assert result.exit_code == 2 and "--images" in result.stderr


def test_eval_reads_dicom_series_folders(cropped, tmp_path):
    from dicom_fixtures import build_series

    image, label = cropped
    build_series(image, tmp_path / "images" / "p1")
    (tmp_path / "labels").mkdir()
    sitk.WriteImage(label, str(tmp_path / "labels" / "p1.nii.gz"))
    out = tmp_path / "run"
    args = ["eval", "--images", tmp_path / "images", "--labels", tmp_path / "labels", "--out", out]
    result = CliRunner().invoke(app, [*map(str, args), *TINY, "--target", "1,4", "--slices-per-case", 2])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"]["evaluated"] == 1 and not summary["cases"]["skipped"]
    assert summary["protocols"]["box"]["axial"]["slices"] == 2


def test_box_per_component_takes_a_one_pixel_wide_region(tmp_path, cropped):
    """A region one pixel wide (a line of tumour core added beside the real one) has an inclusive
    tight box with x0 == x1: a valid SAM box, so its slice is evaluated with one box per region and
    the case is not skipped as bad input."""
    image, label = cropped
    values = sitk.GetArrayFromImage(label)
    core = np.isin(values, (1, 4))
    z = int(np.argmax(core.sum(axis=(1, 2))))
    ys = np.flatnonzero(core[z].any(axis=1))
    column = int(np.flatnonzero(core[z].any(axis=0)).max()) + 3  # clear of the real region
    values[z, ys[0] : ys[-1] + 1, column] = 1
    lined = sitk.GetImageFromArray(values)
    lined.CopyInformation(label)
    root = tmp_path / "brats"
    write_case(root, "BraTS20_Training_001", image, lined)
    out = tmp_path / "run"
    per_region = ("--protocol", "box", "--box-per", "component", "--slices-per-case", 50)
    result = bench(*TINY, "--data", root, "--out", out, *per_region)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r["row"] == "skipped"]
    step = next(r for r in rows if r["row"] == "step" and r["slice"] == z)
    boxes = np.array(step["box"])
    assert boxes.shape[0] >= 2 and any(b[0] == b[2] == column for b in boxes), boxes
