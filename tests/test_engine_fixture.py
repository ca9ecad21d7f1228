"""The evaluation engine against rows recorded from a plain per-slice loop (one slice, one step at a time).

Recorded with ``samfast bench brats`` (onnxruntime, LiteMedSAM, the two demo cases, --compare off):
- reference_rows_per_slice_loop_seed0: --protocol all --slices-per-case 3 --seed 0
- reference_rows_per_slice_loop_seed2_feed_logits_follow_suggested: --protocol all --slices-per-case 2
  --seed 2 --feed-logits --follow suggested
The bar: points and boxes identical; predicted and true IoUs within 1e-3 on >= 99.5 % of masks.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import CASES, DEMO
from typer.testing import CliRunner

from samfast.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
# fixture -> (the run's options, the cases it covers; the second run checks one case, to stay lean)
RUNS = {
    "reference_rows_per_slice_loop_seed0": (("--slices-per-case", "3", "--seed", "0"), CASES),
    "reference_rows_per_slice_loop_seed2_feed_logits_follow_suggested": (
        ("--slices-per-case", "2", "--seed", "2", "--feed-logits", "--follow", "suggested", "--cases", "1"),
        CASES[:1],
    ),
}
IOU_TOLERANCE = 1e-3
MIN_FRACTION_WITHIN = 0.995


def _rows(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def _key(row: dict) -> tuple:
    return (row["row"], row["case"], row.get("plane"), row.get("slice"), row.get("protocol"), row.get("step"))


@pytest.mark.parametrize("name", sorted(RUNS))
def test_engine_reproduces_the_recorded_rows(name, tmp_path):
    out = tmp_path / "run"
    options, cases = RUNS[name]
    args = ["bench", "brats", "--data", str(DEMO), "--protocol", "all", "--out", str(out), *options]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    expected = {_key(r): r for r in _rows(FIXTURES / f"{name}.jsonl.gz") if r["case"] in cases}
    got = {_key(r): r for r in _rows(out / "results.jsonl")}
    assert sorted(got) == sorted(expected)  # same cases, slices, protocols and number of steps

    within = total = 0
    for key, old in expected.items():
        new = got[key]
        if key[0] == "step":
            assert new["points"] == old["points"], key
            assert new["box"] == old["box"], key
            assert new["mask_input"] == old["mask_input"], key
            assert len(new["ious"]) == len(old["ious"]), key
            for field in ("ious", "predicted_ious"):
                for a, b in zip(new[field], old[field], strict=True):
                    within += abs(a - b) <= IOU_TOLERANCE
                    total += 1
        elif key[0] == "slice":
            assert new["steps"] == old["steps"], key
            for selection, entry in old["selections"].items():
                assert new["selections"][selection]["best_step"] == entry["best_step"], (key, selection)
                assert abs(new["selections"][selection]["iou"] - entry["iou"]) <= IOU_TOLERANCE, key
    assert total > 250  # enough masks compared for the 99.5 % share to mean something
    assert within / total >= MIN_FRACTION_WITHIN, f"{within} of {total} IoUs within {IOU_TOLERANCE}"
