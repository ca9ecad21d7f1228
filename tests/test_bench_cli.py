"""`samfast bench brats`: side-by-side backends, resumable results, clear refusals.

Runs the tiny random-weights SAM on one shipped case so the whole protocol takes seconds.
"""

from __future__ import annotations

import json

import pytest
from conftest import DEMO
from typer.testing import CliRunner

from samfast.cli import app

CASE = "BraTS20_Demo_001"


@pytest.fixture()
def one_case(tmp_path):
    root = tmp_path / "brats"
    (root / CASE).mkdir(parents=True)
    for suffix in ("t1ce", "seg"):
        (root / CASE / f"{CASE}_{suffix}.nii.gz").symlink_to(DEMO / CASE / f"{CASE}_{suffix}.nii.gz")
    (root / "name_mapping.csv").write_text(f"Grade,BraTS_2020_subject_ID\nHGG,{CASE}\n")
    return root


def bench(*args):
    return CliRunner().invoke(
        app, ["bench", "brats", "--model", "tiny_vit_test", *map(str, args)], env={"COLUMNS": "200"}
    )


def rows(out):
    return [json.loads(line) for line in (out / "slices.jsonl").read_text().splitlines()]


def test_bench_runs_every_backend_on_every_target_slice(one_case, tmp_path):
    out = tmp_path / "run"
    result = bench("--data", one_case, "--out", out, "--min-area", 300)
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["backends"]) == {"onnxruntime", "torch"}
    slices = summary["backends"]["torch"]["slices"]
    assert slices == summary["backends"]["onnxruntime"]["slices"] > 10
    assert {r["grade"] for r in rows(out)} == {"HGG"}
    assert all(r["area_px"] >= 300 for r in rows(out))
    parity = summary["parity"]["onnxruntime"]
    assert parity["slices"] == slices and parity["min_mask_dice"] >= 0.999
    assert 0.0 <= summary["cases"][CASE]["dice_3d_torch"] <= 1.0


def test_interrupted_run_resumes_without_redoing_or_duplicating_slices(one_case, tmp_path):
    out = tmp_path / "run"
    assert bench("--data", one_case, "--out", out, "--min-area", 300).exit_code == 0
    complete = rows(out)
    lines = (out / "slices.jsonl").read_text().splitlines()
    kept = lines[: len(lines) // 2]
    # As if killed mid-write: half the rows and a torn last line.
    (out / "slices.jsonl").write_text("\n".join(kept) + "\n" + lines[-1][:40])
    result = bench("--data", one_case, "--out", out, "--min-area", 300)
    assert result.exit_code == 0, result.output
    resumed = [
        json.loads(line)
        for line in (out / "slices.jsonl").read_text().splitlines()
        if line.startswith("{") and line.endswith("}")
    ]
    keys = [(r["case"], r["slice"], r["backend"]) for r in resumed]
    assert len(keys) == len(set(keys)) == len(complete)
    assert resumed[: len(kept)] == [json.loads(line) for line in kept]


def test_results_of_another_configuration_are_not_mixed(one_case, tmp_path):
    out = tmp_path / "run"
    assert bench("--data", one_case, "--out", out, "--min-area", 300).exit_code == 0
    result = bench("--data", one_case, "--out", out, "--min-area", 300, "--target", "wt")
    assert result.exit_code == 2
    assert "another run" in result.stderr and "target" in result.stderr
    assert (
        bench("--data", one_case, "--out", out, "--min-area", 300, "--target", "wt", "--fresh").exit_code == 0
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "absent", "no such data folder"),
        (lambda root: root.parent, "no BraTS cases"),
    ],
)
def test_bad_data_folder_is_one_line_exit_2(one_case, tmp_path, make, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = bench("--data", make(empty), "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_case_with_image_but_no_label_is_refused(one_case, tmp_path):
    (one_case / CASE / f"{CASE}_seg.nii.gz").unlink()
    result = bench("--data", one_case, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "has no label" in result.stderr


def torch_only(data, out):
    return ("--data", data, "--out", out, "--min-area", 1000, "--backend", "torch", "--reference", "torch")


def point_rows(out):
    timing = ("set_image_ms", "protocol_ms")
    return [{k: v for k, v in r.items() if k not in timing} for r in rows(out)]


def test_points_putz_protocol_writes_step_curves_and_resumes(one_case, tmp_path):
    out = tmp_path / "run"
    args = torch_only(one_case, out)
    result = bench(*args, "--protocol", "points-putz")
    assert result.exit_code == 0, result.output
    assert "points-putz" in result.stdout and "torch suggested" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["protocol"] == "points-putz" and summary["config"]["seed"] == 0
    entry = summary["protocols"]["points-putz"]["torch"]
    complete = point_rows(out)
    assert entry["slices"] == len(complete) > 10
    assert len(entry["mean_iou_oracle"]) == len(entry["mean_iou_suggested"]) == 9
    assert all(o >= s for o, s in zip(entry["mean_iou_oracle"], entry["mean_iou_suggested"], strict=True))
    assert entry["mean_best_iou_oracle"] >= max(entry["mean_iou_oracle"]) - 1e-12
    for row in complete:
        assert row["protocol"] == "points-putz" and 1 <= len(row["steps"]) <= 9
        assert row["steps"][0]["points"][0][2] == 1
    lines = (out / "slices.jsonl").read_text().splitlines()
    (out / "slices.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:60])
    assert bench(*args, "--protocol", "points-putz").exit_code == 0
    assert point_rows(out) == complete  # same rows, same order, nothing redone twice


def test_mazurowski_protocol_is_reproducible_for_a_seed(one_case, tmp_path):
    runs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        out = tmp_path / name
        args = torch_only(one_case, out)
        assert bench(*args, "--protocol", "points-mazurowski", "--seed", seed).exit_code == 0
        runs.append(point_rows(out))
    assert runs[0] == runs[1]
    points = [[r["steps"][-1]["points"] for r in run] for run in runs]
    assert points[0] != points[2]  # random tie-breaks really depend on the seed


def test_unknown_protocol_is_refused(one_case, tmp_path):
    result = bench("--data", one_case, "--out", tmp_path / "run", "--protocol", "clicks")
    assert result.exit_code == 2 and "protocol 'clicks'" in result.stderr
