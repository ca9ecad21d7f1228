"""The protocol driver on many slices: step k of every slice in one predict_rows call gives the
records of each slice run alone (a batch of one) and of an independent per-point predict loop.

On real BraTS demo slices, with the exported split decoder (one call per row) and with torch's true
batched decode (one call per step).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tumour_slices
from independent import putz_by_hand

from samfast import Predictor
from samfast.eval.metrics import bounding_box
from samfast.eval.protocols import run_box_points, run_points_mazurowski, run_points_putz, run_slices
from samfast.preprocess import normalize_mr_putz


def _setup(backend: str, per_case: int, demo_cases):
    """(predictor, embeddings, GT masks) of ``per_case`` tumour slices of each demo case."""
    predictor = Predictor("litemedsam", backend=backend)
    embeddings, gts = [], []
    for volume, mask in demo_cases.values():
        scaled = normalize_mr_putz(volume)
        for z in tumour_slices(mask, per_case):
            predictor.set_image(scaled[z])
            embeddings.append(predictor.get_image_embedding())
            gts.append(mask[z])
    return predictor, embeddings, gts


@pytest.fixture(scope="module")
def setup(demo_cases):
    """The exported decoder (onnxruntime): one decode per slice and step, bitwise the same path."""
    return _setup("onnxruntime", 3, demo_cases)


@pytest.fixture(scope="module")
def torch_setup(demo_cases):
    """torch: one decode per step for all slices where its info says batched_rows."""
    return _setup("torch", 1, demo_cases)


def one_by_one(predictor, embeddings, gts, run) -> list[list[dict]]:
    out = []
    for embedding, gt in zip(embeddings, gts, strict=True):
        predictor.set_image_embedding(embedding, gt.shape)
        out.append(run(gt))
    return out


def assert_same_records(expected: list[list[dict]], got: list[list[dict]]) -> None:
    assert len(got) == len(expected)
    for slice_expected, slice_got in zip(expected, got, strict=True):
        assert len(slice_got) == len(slice_expected)
        for a, b in zip(slice_expected, slice_got, strict=True):
            assert a.keys() == b.keys()
            assert a["points"] == b["points"] and a["box"] == b["box"]
            assert a["oracle"] == b["oracle"] and a["suggested"] == b["suggested"]
            np.testing.assert_allclose(b["ious"], a["ious"], atol=1e-3)
            np.testing.assert_allclose(b["predicted_ious"], a["predicted_ious"], atol=1e-3)


def test_batched_putz_equals_the_per_slice_protocol(setup):
    predictor, embeddings, gts = setup
    expected = one_by_one(predictor, embeddings, gts, lambda gt: run_points_putz(predictor, gt))
    masks: list = []
    got = run_slices(predictor, np.concatenate(embeddings), gts, "points-putz", masks_out=masks)
    assert_same_records(expected, got)
    assert [len(m) for m in masks] == [len(r) for r in got]
    assert max(len(r) for r in got) > 1  # the loop really iterated
    # and an independent loop of people-tier predict calls, one per point, agrees
    by_hand = one_by_one(predictor, embeddings, gts, lambda gt: putz_by_hand(predictor, gt))
    for records, steps in zip(got, by_hand, strict=True):
        assert [r["points"] for r in records] == [points for points, _ in steps]
        np.testing.assert_allclose([r["ious"] for r in records], [ious for _, ious in steps], atol=1e-3)


def test_batched_putz_with_logit_feedback_equals_the_per_slice_protocol(setup):
    predictor, embeddings, gts = setup
    run = lambda gt: run_points_putz(predictor, gt, max_points=4, feed_logits=True)  # noqa: E731
    expected = one_by_one(predictor, embeddings, gts, run)
    got = run_slices(
        predictor, np.concatenate(embeddings), gts, "points-putz", max_points=4, feed_logits=True
    )
    assert_same_records(expected, got)
    assert all(step["mask_input"] for records in got for step in records[1:])


def test_batched_mazurowski_and_box_points_equal_the_per_slice_protocols(setup):
    predictor, embeddings, gts = setup
    expected = one_by_one(
        predictor,
        embeddings,
        gts,
        lambda gt: run_points_mazurowski(predictor, gt, np.random.default_rng(7), 5),
    )
    rngs = [np.random.default_rng(7) for _ in gts]
    stacked = np.concatenate(embeddings)
    assert_same_records(
        expected, run_slices(predictor, stacked, gts, "points-mazurowski", rngs, max_points=5)
    )
    boxes = [bounding_box(gt) for gt in gts]
    expected = one_by_one(
        predictor, embeddings, gts, lambda gt: run_box_points(predictor, gt, bounding_box(gt), max_clicks=3)
    )
    assert_same_records(
        expected, run_slices(predictor, stacked, gts, "box-points", boxes=boxes, max_clicks=3)
    )


def test_torch_one_decode_per_step_equals_the_per_slice_protocol(torch_setup):
    from samfast.backends.torch_backend import TorchBackend

    predictor, embeddings, gts = torch_setup
    run = lambda gt: run_points_putz(predictor, gt, max_points=4)  # noqa: E731
    # on the CPU torch decodes rows one by one (its batch costs more there)
    assert not predictor.backend.info.batched_rows
    expected = one_by_one(predictor, embeddings, gts, run)
    batched = TorchBackend(predictor.backend.model, "cpu", batch_rows=True)  # as on a GPU
    assert batched.info.batched_rows
    calls = []
    decode_batched = batched.decode_batched
    batched.decode_batched = lambda e, p: calls.append(len(e)) or decode_batched(e, p)
    stepper = Predictor.from_backend("litemedsam", predictor.weights, batched)
    got = run_slices(stepper, np.concatenate(embeddings), gts, "points-putz", max_points=4)
    assert_same_records(expected, got)
    assert len(calls) == max(len(r) for r in got) and calls[0] == len(gts)


def test_predict_rows_gives_each_row_its_own_embedding(torch_setup, setup):
    for predictor, embeddings, gts in (torch_setup, setup):
        points = np.array([[[100.0, 120.0]], [[90.0, 140.0]]], np.float32)
        labels = np.ones((2, 1), np.float32)
        stacked = np.concatenate(embeddings[:2])
        rows, scores = predictor.predict_rows(stacked, [1, 0], gts[0].shape, points, labels)
        for r, i in enumerate((1, 0)):
            predictor.set_image_embedding(embeddings[i], gts[0].shape)
            _, iou, low = predictor.predict_batch(points[r : r + 1], labels[r : r + 1])
            np.testing.assert_allclose(rows[r], low[0], atol=1e-4)
            np.testing.assert_allclose(scores[r], iou[0], atol=1e-5)
        assert not np.allclose(rows[0], rows[1])
