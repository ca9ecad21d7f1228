"""onnxruntime vs the PyTorch fp32 reference on real BraTS slices, judged by the tolerance table.

Boxes come from the tumour-core label; points and mask feedback exercise the rest of the decoder.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CASES, tumour_slices

from samfast import Predictor
from samfast.eval.metrics import bounding_box
from samfast.eval.parity import ParityChecker, tolerance_for
from samfast.preprocess import normalize_mr_putz

SLICES_PER_CASE = 3


@pytest.fixture(scope="module")
def predictors():
    return {
        "torch": Predictor("litemedsam", backend="torch"),
        "onnxruntime": Predictor("litemedsam", backend="onnxruntime"),
    }


def _prompt_sets(truth: np.ndarray) -> list[dict]:
    box = bounding_box(truth)
    ys, xs = np.nonzero(truth)
    inside = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32)
    outside = np.array([[box[0] - 5, box[1] - 5]], np.float32).clip(0)
    return [
        {"box": box, "multimask_output": False},
        {"box": box, "multimask_output": True},
        {"box": box, "point_coords": inside, "point_labels": np.array([1])},
        {"point_coords": np.vstack([inside, outside]), "point_labels": np.array([1, 0])},
    ]


@pytest.fixture(scope="module")
def parity_report(predictors, demo_cases):
    reference, candidate = predictors["torch"], predictors["onnxruntime"]
    checker = ParityChecker("onnxruntime", "fp32")
    for case in CASES:
        volume, label = demo_cases[case]
        scaled = normalize_mr_putz(volume)
        for z in tumour_slices(label, SLICES_PER_CASE):
            reference.set_image(scaled[z])
            candidate.set_image(scaled[z])
            checker.add_output(
                "image_embeddings", reference.get_image_embedding(), candidate.get_image_embedding()
            )
            for prompt in _prompt_sets(label[z]):
                ref = reference.predict(**prompt)
                got = candidate.predict(**prompt)
                # Feed the low-res logits back, as the iterative protocols do.
                best = int(np.argmax(ref[1]))
                ref_fb = reference.predict(**prompt | {"mask_input": ref[2][best : best + 1]})
                got_fb = candidate.predict(**prompt | {"mask_input": ref[2][best : best + 1]})
                for (r_masks, r_iou, r_low), (c_masks, c_iou, c_low) in ((ref, got), (ref_fb, got_fb)):
                    checker.add_output("low_res_masks", r_low, c_low)
                    checker.add_output("iou_predictions", r_iou, c_iou)
                    for k in range(len(r_iou)):
                        checker.add_prompt(r_masks[k], c_masks[k], r_iou[k], c_iou[k])
    return checker.report


def test_onnxruntime_matches_torch_reference_on_real_slices(parity_report):
    summary = parity_report.summary()
    assert parity_report.passed, summary
    assert summary["prompts"] >= 2 * SLICES_PER_CASE * 4 * 2


def test_every_mask_reaches_the_fp32_dice_bound(parity_report):
    tol = tolerance_for("onnxruntime", "fp32")
    assert min(parity_report.mask_dice) >= tol.min_mask_dice == 0.999


def test_predicted_iou_differs_by_at_most_1e_3(parity_report):
    assert max(parity_report.iou_delta) <= 1e-3


def test_raw_outputs_are_within_rtol_1e_3_atol_1e_4(parity_report):
    for name, error in parity_report.outputs.items():
        assert error.within_tolerance, (name, error)


def test_box_prompts_segment_the_tumour_on_real_slices(predictors, demo_cases):
    """LiteMedSAM was trained with boxes: a tight box must give a usable tumour mask."""
    from samfast.eval.metrics import dice

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
