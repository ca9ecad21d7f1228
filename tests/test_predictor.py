"""Predictor semantics: identical to segment-anything's SamPredictor given the same embedding.

Cheap checks run on the tiny random-weights SAM; the real model is checked on a demo slice.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CASES
from segment_anything import SamPredictor

from samfast import Predictor
from samfast.backends import Prompts
from samfast.errors import InputError
from samfast.eval.metrics import bounding_box
from samfast.models import build_model
from samfast.preprocess import normalize_mr_putz


@pytest.fixture(scope="module")
def real_slice(demo_cases):
    volume, label = demo_cases[CASES[0]]
    z = int(np.argmax(label.sum(axis=(1, 2))))
    return normalize_mr_putz(volume)[z], label[z]


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def tiny(request):
    return Predictor("tiny_vit_test", backend=request.param)


def _reference(model_name: str, predictor: Predictor) -> SamPredictor:
    """segment-anything's own predictor sharing our embedding and geometry."""
    reference = SamPredictor(build_model(model_name, weights=predictor.weights))
    reference.features = torch.from_numpy(predictor.get_image_embedding())
    reference.original_size = predictor.original_size
    reference.input_size = predictor.input_size
    reference.is_image_set = True
    return reference


def _prompts(label: np.ndarray, low_res: int) -> list[dict]:
    box = bounding_box(label)
    ys, xs = np.nonzero(label)
    point = np.array([[xs.mean(), ys.mean()]], np.float32)
    rng = np.random.default_rng(0)
    return [
        {"box": box},
        {"point_coords": point, "point_labels": np.array([1])},  # needs the padding point
        {"point_coords": np.vstack([point, point + 9]), "point_labels": np.array([1, 0]), "box": box},
        {"box": box, "mask_input": rng.normal(size=(1, low_res, low_res)).astype(np.float32)},
    ]


@pytest.mark.parametrize("multimask", [True, False])
def test_tiny_predictions_match_sampredictor(tiny, real_slice, multimask):
    image, label = real_slice
    tiny.set_image(image)
    reference = _reference("tiny_vit_test", tiny)
    for prompt in _prompts(label, tiny.spec.low_res_size):
        masks, iou, low = tiny.predict(**prompt, multimask_output=multimask)
        ref_masks, ref_iou, ref_low = reference.predict(**prompt, multimask_output=multimask)
        assert masks.shape == ref_masks.shape == (3 if multimask else 1, *image.shape)
        np.testing.assert_allclose(iou, ref_iou, atol=1e-4)
        np.testing.assert_allclose(low, ref_low, atol=1e-3, rtol=1e-3)
        assert (masks != ref_masks).mean() < 1e-3


def test_litemedsam_box_prediction_matches_sampredictor(real_slice):
    image, label = real_slice
    predictor = Predictor("litemedsam", backend="onnxruntime")
    predictor.set_image(image)
    reference = _reference("litemedsam", predictor)
    for prompt in _prompts(label, 256):
        masks, iou, _ = predictor.predict(**prompt)
        ref_masks, ref_iou, _ = reference.predict(**prompt)
        np.testing.assert_allclose(iou, ref_iou, atol=1e-3)
        assert (masks != ref_masks).mean() < 1e-3


def test_predict_batch_equals_one_predict_per_box(tiny, real_slice):
    image, label = real_slice
    tiny.set_image(image)
    box = bounding_box(label)
    boxes = np.stack([box + shift for shift in (-4, 0, 3, 7)])
    masks, iou, low = tiny.predict_batch(boxes=boxes, multimask_output=False)
    assert masks.shape == (4, 1, *image.shape) and iou.shape == (4, 1)
    for k, single in enumerate(boxes):
        one_masks, one_iou, one_low = tiny.predict(box=single, multimask_output=False)
        np.testing.assert_allclose(low[k], one_low, atol=1e-4)
        np.testing.assert_allclose(iou[k], one_iou, atol=1e-5)


def test_embedding_can_be_reused_in_another_predictor(tiny, real_slice):
    image, label = real_slice
    tiny.set_image(image)
    expected = tiny.predict(box=bounding_box(label))
    other = Predictor("tiny_vit_test", backend="torch")
    other.set_image_embedding(tiny.get_image_embedding(), image.shape)
    got = other.predict(box=bounding_box(label))
    np.testing.assert_allclose(got[1], expected[1], atol=1e-4)
    assert (got[0] != expected[0]).mean() < 1e-3


def test_grey_uint8_and_replicated_rgb_give_the_same_embedding(tiny, real_slice):
    image = np.clip(real_slice[0], 0, 255).astype(np.uint8)
    tiny.set_image(image)
    grey = tiny.get_image_embedding()
    tiny.set_image(np.repeat(image[..., None], 3, axis=2).astype(np.float64))
    np.testing.assert_allclose(tiny.get_image_embedding(), grey, atol=1e-5)


def test_onnx_encoder_batches_slices_like_one_at_a_time(real_slice):
    """The slice axis of the exported TinyViT stays dynamic (PatchMerging is made traceable)."""
    predictor = Predictor("litemedsam", backend="onnxruntime")
    image = real_slice[0]
    batch = np.stack([predictor.prepare_image(image), predictor.prepare_image(image[::-1].copy())])
    together = predictor.backend.encode(batch)
    for k in range(2):
        np.testing.assert_allclose(together[k], predictor.backend.encode(batch[k : k + 1])[0], atol=1e-4)


def test_padding_point_is_added_only_without_a_box():
    points = Prompts(point_coords=np.zeros((2, 1, 2)), point_labels=np.ones((2, 1)))
    feeds = points.to_sam_onnx(256)
    assert feeds["point_labels"].tolist() == [[1, -1], [1, -1]]
    with_box = Prompts(
        point_coords=np.zeros((1, 1, 2)),
        point_labels=np.ones((1, 1)),
        boxes=np.array([[1, 2, 3, 4]], np.float32),
    )
    feeds = with_box.to_sam_onnx(256)
    assert feeds["point_labels"].tolist() == [[1, 2, 3]]
    assert feeds["point_coords"][0, 1:].tolist() == [[1, 2], [3, 4]]
    assert feeds["has_mask_input"].tolist() == [0.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"box": [10, 10, 10, 40]}, "empty or inverted"),
        ({"box": [40, 10, 10, 40]}, "empty or inverted"),
        ({"box": [10, 10, 300, 40]}, "outside"),
        ({"box": [-5, 10, 30, 40]}, "outside"),
        ({"box": [1, 2, 3]}, "B×4"),
        ({"point_coords": [[10, 10]]}, "go together"),
        ({"point_coords": [[10, 10]], "point_labels": [7]}, "1 \\(foreground\\) or 0"),
        ({"point_coords": [[10, 999]], "point_labels": [1]}, "outside"),
        ({"box": [10, 10, 40, 40], "mask_input": np.zeros((1, 5, 5))}, "low-res logits"),
        ({}, "at least one prompt"),
    ],
)
def test_bad_prompts_raise_one_line_input_errors(tiny, real_slice, kwargs, message):
    tiny.set_image(real_slice[0])
    with pytest.raises(InputError, match=message) as info:
        tiny.predict(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((20, 20), np.nan), "NaN"),
        (np.zeros((20, 20, 4)), "H×W×3"),
        (np.zeros((0, 20)), "H×W"),
        (np.array([["a"]]), "numeric"),
    ],
)
def test_bad_images_are_refused(tiny, image, message):
    with pytest.raises(InputError, match=message):
        tiny.set_image(image)


def test_predict_before_set_image_is_refused():
    predictor = Predictor("tiny_vit_test", backend="torch")
    with pytest.raises(InputError, match="set_image"):
        predictor.predict(box=[1, 1, 5, 5])


def test_embedding_of_the_wrong_shape_is_refused(tiny):
    with pytest.raises(InputError, match="does not fit"):
        tiny.set_image_embedding(np.zeros((1, 256, 64, 64), np.float32), (240, 240))


def test_half_precision_on_cpu_and_unknown_backend_are_refused():
    with pytest.raises(InputError, match="needs a CUDA"):
        Predictor("tiny_vit_test", backend="torch", precision="fp16")
    with pytest.raises(InputError, match="unknown backend"):
        Predictor("tiny_vit_test", backend="tensorflow")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cuda_keeps_box_masks(real_slice, precision):
    from samfast.eval.parity import ParityChecker

    image, label = real_slice
    reference = Predictor("litemedsam", backend="torch")
    candidate = Predictor("litemedsam", backend="torch", device="cuda", precision=precision)
    checker = ParityChecker("torch", precision)
    for predictor in (reference, candidate):
        predictor.set_image(image)
    box = bounding_box(label)
    for shift in range(-6, 7, 2):
        ref = reference.predict(box=box + shift, multimask_output=False)
        got = candidate.predict(box=box + shift, multimask_output=False)
        checker.add_prompt(ref[0][0], got[0][0], ref[1][0], got[1][0])
    assert checker.report.passed, checker.report.summary()
