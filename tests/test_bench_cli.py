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
