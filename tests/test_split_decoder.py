"""The decoder split at the prompt gives segment-anything's decoder outputs, on real slices.

Reference: segment-anything's own prompt encoder + MaskDecoder.predict_masks in PyTorch fp32 on
LiteMedSAM embeddings of BraTS demo slices; the split modules in PyTorch, their ONNX graphs in
ONNX Runtime, the predictor's use of them, and the batched protocol's bounded state store.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tumour_slices

from samfast import Predictor, preprocess
from samfast.backends import Prompts
from samfast.backends.image_states import ImageStateCache
from samfast.eval.metrics import bounding_box
from samfast.eval.protocols import run_points_putz, run_slices
from samfast.export.split_decoder import DecoderImageSide, DecoderPromptSide

LOGIT_ATOL = 1e-3  # low-res logits span about ±40
IOU_ATOL = 1e-4


@pytest.fixture(scope="module")
def reference(demo_cases):
    """(torch predictor, embeddings (N, C, h, w), [(slice shape, GT mask)]) of 4 demo slices."""
    predictor = Predictor("litemedsam", backend="torch")
    embeddings, slices = [], []
    for volume, mask in demo_cases.values():
        scaled = preprocess.normalize_mr_putz(volume)
        for z in tumour_slices(mask, 2):
            predictor.set_image(scaled[z])
            embeddings.append(predictor.get_image_embedding())
            slices.append(mask[z])
    return predictor, np.concatenate(embeddings), slices


def prompt_sets(gt: np.ndarray, side: int) -> list[Prompts]:
    """Box, one click, three clicks, nine clicks + box: 7 to 16 decoder tokens."""
    ys, xs = np.nonzero(gt)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, xs.size, 9)
    clicks = np.stack([xs[picks], ys[picks]], 1).astype(np.float32)
    clicks[1::3] = (5.0, 5.0)  # some background clicks far from the tumour
    labels = np.where(np.arange(9) % 3 == 1, 0.0, 1.0).astype(np.float32)
    x0, y0, x1, y1 = bounding_box(gt)
    box = np.array([[x0, y0, x1 + 1, y1 + 1]], np.float32)

    def frame(n):
        return preprocess.transform_coords(clicks[None, :n], gt.shape, side)

    return [
        Prompts(boxes=preprocess.transform_boxes(box, gt.shape, side)),
        Prompts(point_coords=frame(1), point_labels=labels[None, :1]),
        Prompts(point_coords=frame(3), point_labels=labels[None, :3]),
        Prompts(
            point_coords=frame(9),
            point_labels=labels[None, :9],
            boxes=preprocess.transform_boxes(box, gt.shape, side),
        ),
    ]


def assert_close(got: tuple, expected: tuple) -> None:
    masks, iou = got
    ref_masks, ref_iou = expected
    assert masks.shape == ref_masks.shape and iou.shape == ref_iou.shape
    np.testing.assert_allclose(masks, ref_masks, rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=IOU_ATOL)
    # the masks themselves: the same pixels above 0 but for a handful on the boundary
    agree = ((masks > 0) == (ref_masks > 0)).mean()
    assert agree > 0.9999


def test_split_modules_reproduce_predict_masks(reference):
    predictor, embeddings, slices = reference
    model = predictor.backend.model
    image_side, prompt_side = DecoderImageSide(model), DecoderPromptSide(model)
    side = predictor.spec.input_size
    with torch.inference_mode():
        state = image_side(torch.from_numpy(embeddings))
        for i, gt in enumerate(slices):
            for prompts in prompt_sets(gt, side):
                onnx_style = prompts.to_sam_onnx(predictor.spec.low_res_size)
                row = [s[i : i + 1] for s in state]
                iou, masks = prompt_side(
                    *row,
                    torch.from_numpy(onnx_style["point_coords"]),
                    torch.from_numpy(onnx_style["point_labels"]),
                )
                expected = predictor.backend.decode(embeddings[i : i + 1], prompts)
                assert_close((masks.numpy(), iou.numpy()), expected)


def test_onnxruntime_split_graphs_equal_the_reference_shared_and_per_row(reference):
    predictor, embeddings, slices = reference
    fast = Predictor("litemedsam", backend="onnxruntime").backend
    assert fast.info.split_decoder
    side = predictor.spec.input_size
    states = fast.image_state(embeddings)
    assert all(len(v) == len(embeddings) for v in states.values())
    for i, gt in enumerate(slices):
        one = {k: v[i : i + 1] for k, v in states.items()}
        for prompts in prompt_sets(gt, side):
            expected = predictor.backend.decode(embeddings[i : i + 1], prompts)
            assert_close(fast.decode_state(one, prompts), expected)
    # one state row shared by several prompt sets, and one row per prompt set (a protocol step)
    boxes = np.concatenate([prompt_sets(gt, side)[0].boxes for gt in slices])
    shared = fast.decode_state({k: v[:1] for k, v in states.items()}, Prompts(boxes=boxes))
    assert_close(shared, predictor.backend.decode(embeddings[:1], Prompts(boxes=boxes)))
    per_row = fast.decode_state(states, Prompts(boxes=boxes))
    for i in range(len(slices)):
        expected = predictor.backend.decode(embeddings[i : i + 1], Prompts(boxes=boxes[i : i + 1]))
        assert_close((per_row[0][i : i + 1], per_row[1][i : i + 1]), expected)
    with pytest.raises(ValueError, match="no mask_input"):
        fast.decode_state(states, Prompts(boxes=boxes, mask_input=np.zeros((4, 1, 256, 256), np.float32)))


def test_predictor_computes_an_image_state_once_per_embedding(reference, demo_cases):
    reference_predictor, embeddings, slices = reference
    predictor = Predictor("litemedsam", backend="onnxruntime")
    calls = []
    image_state = predictor.backend.image_state
    predictor.backend.image_state = lambda e: calls.append(1) or image_state(e)
    gt = slices[0]
    x0, y0, x1, y1 = bounding_box(gt)
    first = embeddings[:1]  # the state is keyed by the array object a slice cache hands back
    predictor.set_image_embedding(first, gt.shape)
    reference_predictor.set_image_embedding(first, gt.shape)
    for box in ([x0, y0, x1, y1], [x0 + 2, y0 + 2, x1 - 2, y1 - 2]):
        masks, iou, low_res = predictor.predict(box=np.array(box), multimask_output=False)
        ref_masks, ref_iou, ref_low = reference_predictor.predict(box=np.array(box), multimask_output=False)
        np.testing.assert_allclose(low_res, ref_low, atol=LOGIT_ATOL)
        assert (masks == ref_masks).mean() > 0.9999
    assert len(calls) == 1  # the second click reused the state
    # a mask prompt changes the image side: the plain decoder answers it, no new state
    predictor.predict(box=np.array([x0, y0, x1, y1]), mask_input=low_res)
    assert len(calls) == 1
    # another embedding gets its own state; coming back to the first finds it again
    predictor.set_image_embedding(embeddings[1:2], slices[1].shape)
    predictor.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]))
    predictor.set_image_embedding(first, gt.shape)
    predictor.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]))
    assert len(calls) == 2


def test_batched_protocol_bounded_state_store_gives_the_same_records(reference):
    _, embeddings, slices = reference
    predictor = Predictor("litemedsam", backend="onnxruntime")
    expected = []
    for i, gt in enumerate(slices):
        predictor.set_image_embedding(embeddings[i : i + 1], gt.shape)
        expected.append(run_points_putz(predictor, gt, max_points=4))
    one_state = 1  # room for no state at all: every step recomputes them
    for budget in (one_state, 64 << 20):
        predictor.backend.image_states = ImageStateCache(predictor.backend.image_state, budget)
        got = run_slices(predictor, embeddings, slices, "points-putz", max_points=4)
        assert (len(predictor.backend.image_states) == 0) == (budget == one_state)
        for a_steps, b_steps in zip(expected, got, strict=True):
            assert [s["points"] for s in a_steps] == [s["points"] for s in b_steps]
            for a, b in zip(a_steps, b_steps, strict=True):
                np.testing.assert_allclose(b["ious"], a["ious"], atol=1e-3)


def test_image_state_store_keeps_what_fits_and_recomputes_the_rest(reference):
    _, embeddings, _ = reference
    backend = Predictor("litemedsam", backend="onnxruntime").backend
    one = sum(v.nbytes for v in backend.image_state(embeddings[:1]).values())
    store = ImageStateCache(backend.image_state, max_bytes=2 * one)
    first = store.states(embeddings, [0, 1, 2, 3], evict=False)  # a program's scan: no eviction
    assert len(store) == 2 and store.bytes == 2 * one and store.computed == 4
    again = store.states(embeddings, [3, 1, 0, 2], evict=False)
    assert store.computed == 6  # 2 and 3 again, 0 and 1 from the store
    again = {name: value[[2, 1, 3, 0]] for name, value in again.items()}
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    # a person's clicks: least recently used out, so the newest slice is kept
    store.states(embeddings, [3], evict=True)
    assert store.computed == 7 and store.bytes == 2 * one
    store.states(embeddings, [0, 3], evict=True)
    assert store.computed == 7  # 1 (used before 0) went; 0 and 3 kept
    # a freed embedding array never answers for another one
    copy = embeddings.copy()
    store.states(copy, [1], evict=True)
    assert store.computed == 8
