"""onnxruntime vs the PyTorch fp32 reference on real BraTS slices, judged by the tolerance table.

Boxes come from the tumour-core label; points and mask feedback exercise the rest of the decoder.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CASES, tumour_slices

from samfast import Predictor
from samfast.eval.metrics import bounding_box, dice
from samfast.eval.parity import compare_predictors, tolerance_for
from samfast.preprocess import normalize_mr_putz

SLICES_PER_CASE = 3


@pytest.fixture(scope="module")
def predictors():
    return {
        "torch": Predictor("litemedsam", backend="torch"),
        "onnxruntime": Predictor("litemedsam", backend="onnxruntime"),
    }


@pytest.fixture(scope="module")
def parity_report(predictors, demo_cases):
    slices = []
    for case in CASES:
        volume, label = demo_cases[case]
        scaled = normalize_mr_putz(volume)
        slices += [(scaled[z], label[z]) for z in tumour_slices(label, SLICES_PER_CASE)]
    return compare_predictors(predictors["torch"], predictors["onnxruntime"], slices, "onnxruntime", "fp32")


def test_onnxruntime_matches_torch_reference_on_real_slices(parity_report):
    summary = parity_report.summary()
    assert parity_report.passed, summary
    assert summary["prompts"] >= 2 * SLICES_PER_CASE * 5 * 2


def test_every_mask_reaches_the_fp32_dice_bound(parity_report):
    tol = tolerance_for("onnxruntime", "fp32")
    assert min(parity_report.mask_dice) >= tol.min_mask_dice == 0.999


def test_predicted_iou_differs_by_at_most_1e_3(parity_report):
    assert max(parity_report.iou_delta) <= 1e-3


def test_raw_outputs_are_within_rtol_1e_3_atol_1e_4(parity_report):
    assert set(parity_report.outputs) == {"image_embeddings", "low_res_masks", "iou_predictions"}
    for name, error in parity_report.outputs.items():
        assert error.within_tolerance, (name, error)


def test_a_broken_candidate_fails_the_check(predictors, demo_cases):
    """The checker must be able to fail: a decoder that drops the box cannot pass."""

    class DropBox:
        def __init__(self, inner):
            self.inner, self.name, self.info = inner, inner.name, inner.info

        def encode(self, images):
            return self.inner.encode(images)

        def describe(self):
            return self.inner.describe()

        def decode(self, embedding, prompts):
            prompts.boxes = None if prompts.point_coords is not None else prompts.boxes * 0.9
            return self.inner.decode(embedding, prompts)

        def decode_rows(self, embeddings, rows, prompts):
            prompts.boxes = None if prompts.point_coords is not None else prompts.boxes * 0.9
            return self.inner.decode_rows(embeddings, rows, prompts)

        def release(self, *graphs):
            self.inner.release(*graphs)

    volume, label = demo_cases[CASES[0]]
    z = int(np.argmax(label.sum(axis=(1, 2))))
    broken = Predictor.from_backend(
        "litemedsam", predictors["torch"].weights, DropBox(predictors["onnxruntime"].backend)
    )
    report = compare_predictors(
        predictors["torch"], broken, [(normalize_mr_putz(volume)[z], label[z])], "onnxruntime", "fp32"
    )
    assert not report.passed


def test_box_prompts_segment_the_tumour_on_real_slices(predictors, demo_cases):
    """LiteMedSAM was trained with boxes: a tight box must give a usable tumour mask."""
    predictor = predictors["onnxruntime"]
    volume, label = demo_cases[CASES[0]]
    scaled = normalize_mr_putz(volume)
    scores = []
    largest = np.argsort(label.sum(axis=(1, 2)))[-3:]  # mid-tumour slices; small rims score lower
    for z in largest:
        predictor.set_image(scaled[z])
        masks, _, _ = predictor.predict(box=bounding_box(label[z]), multimask_output=False)
        scores.append(dice(masks[0], label[z]))
    assert np.mean(scores) > 0.75, scores
