"""Prompt protocols end to end: LiteMedSAM on real BraTS demo slices, and a stub for the loop logic.

The Putz points are cross-checked against a separate brute-force implementation of the paper's rule.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tumour_slices
from independent import putz_points_by_hand

from samfast import Predictor
from samfast.errors import InputError
from samfast.eval.metrics import bounding_box, iou
from samfast.eval.prompts import jittered_box, putz_first_point
from samfast.eval.protocols import run_box, run_box_points, run_points_mazurowski, run_points_putz
from samfast.preprocess import normalize_mr_putz

CASE = "BraTS20_Demo_001"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor("litemedsam", backend="onnxruntime")


@pytest.fixture(scope="module")
def scaled(demo_cases) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {case: (normalize_mr_putz(volume), mask) for case, (volume, mask) in demo_cases.items()}


@pytest.fixture()
def largest_slice(predictor, scaled) -> np.ndarray:
    """GT of the largest tumour-core slice of the first demo case, its image set on the predictor."""
    volume, mask = scaled[CASE]
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    predictor.set_image(volume[z])
    return mask[z]


def check_records(records: list[dict], outputs: int) -> None:
    for number, record in enumerate(records, start=1):
        assert record["step"] == number
        assert len(record["ious"]) == len(record["predicted_ious"]) == outputs
        assert all(0.0 <= v <= 1.0 for v in record["ious"])
        assert record["oracle"] == int(np.argmax(record["ious"]))
        assert record["suggested"] == int(np.argmax(record["predicted_ious"]))
        assert record["oracle_iou"] >= record["suggested_iou"]
    json.dumps(records)  # plain data, ready for a jsonl row


def test_putz_places_up_to_nine_points_starting_at_the_tumour_centre(predictor, largest_slice):
    records = run_points_putz(predictor, largest_slice)
    check_records(records, outputs=3)
    assert len(records) == 9
    assert [len(r["points"]) for r in records] == list(range(1, 10))
    assert tuple(records[0]["points"][0]) == putz_first_point(largest_slice)
    assert all(r["points"][: n + 1] == records[-1]["points"][: n + 1] for n, r in enumerate(records))
    assert not any(r["mask_input"] for r in records)


def test_putz_is_deterministic_and_feeding_logits_changes_the_calls(predictor, largest_slice):
    assert run_points_putz(predictor, largest_slice) == run_points_putz(predictor, largest_slice)
    fed = run_points_putz(predictor, largest_slice, max_points=4, feed_logits=True)
    check_records(fed, outputs=3)
    assert [r["mask_input"] for r in fed] == [False, True, True, True]


def test_mazurowski_is_deterministic_for_a_seed(predictor, largest_slice):
    first = run_points_mazurowski(predictor, largest_slice, np.random.default_rng(11))
    again = run_points_mazurowski(predictor, largest_slice, np.random.default_rng(11))
    check_records(first, outputs=3)
    assert first == again and len(first) == 9
    x, y, label = first[0]["points"][0]
    assert label == 1 and largest_slice[y, x]


def test_box_protocols(predictor, largest_slice):
    box = bounding_box(largest_slice)
    (record,) = run_box(predictor, largest_slice, box)
    check_records([record], outputs=1)
    masks, _, _ = predictor.predict(box=box, multimask_output=False)
    assert record["ious"][0] == iou(masks[0], largest_slice) > 0.5  # LiteMedSAM is a box model
    jittered = jittered_box(largest_slice, np.random.default_rng(0))
    records = run_box_points(predictor, largest_slice, jittered, max_clicks=5)
    check_records(records, outputs=3)
    assert records[0]["points"] == [] and len(records) <= 6
    assert all(r["box"] == [float(v) for v in jittered] for r in records)
    assert [len(r["points"]) for r in records] == list(range(len(records)))


@pytest.mark.parametrize("case", ["BraTS20_Demo_001", "BraTS20_Demo_002"])
def test_putz_points_match_an_independent_implementation(predictor, scaled, case):
    volume, mask = scaled[case]
    for z in tumour_slices(mask, 3):
        predictor.set_image(volume[z])
        records = run_points_putz(predictor, mask[z])
        assert records[-1]["points"] == putz_points_by_hand(predictor, mask[z])


# -- loop logic on a stub predictor ----------------------------------------------------------------


class StubPredictor:
    """The program tier returning fixed masks (GT, empty, everything) with fixed predicted IoUs."""

    def __init__(self, gt: np.ndarray, scores: tuple[float, float, float]) -> None:
        self.fixed = np.stack([gt, np.zeros_like(gt), np.ones_like(gt)])
        self.scores = np.array(scores, np.float32)
        self.calls = 0

    def get_image_embedding(self) -> np.ndarray:
        return np.zeros((1, 1, 1, 1), np.float32)

    def predict_rows(self, embeddings, rows, original_size, *prompts):
        self.calls += 1
        return np.zeros((len(rows), 3, 4, 4), np.float32), np.tile(self.scores, (len(rows), 1))

    def masks(self, low_res, original_size):
        return self.fixed


def test_protocol_stops_when_the_followed_mask_is_perfect():
    gt = np.zeros((32, 32), bool)
    gt[8:20, 10:24] = True
    stub = StubPredictor(gt, (0.1, 0.2, 0.9))  # oracle is mask 0 (perfect), suggested mask 2
    records = run_points_putz(stub, gt)
    assert len(records) == stub.calls == 1 and records[0]["oracle_iou"] == 1.0
    # Following the suggested (full-image) mask never converges: nine background-point steps.
    following = run_points_putz(StubPredictor(gt, (0.1, 0.2, 0.9)), gt, follow="suggested")
    assert len(following) == 9 and all(p[2] == 0 for p in following[-1]["points"][1:])
    mazurowski = run_points_mazurowski(StubPredictor(gt, (0.9, 0.2, 0.1)), gt, np.random.default_rng(0))
    assert len(mazurowski) == 1
    with pytest.raises(InputError, match="follow"):
        run_points_putz(stub, gt, follow="best")
