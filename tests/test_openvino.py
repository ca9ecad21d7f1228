"""OpenVINO backend: the exported ONNX set on OpenVINO's CPU plugin, judged by the parity table."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tumour_slices

pytest.importorskip("openvino", reason="the openvino extra is not installed")

from samfast import Predictor  # noqa: E402
from samfast.backends import BACKENDS  # noqa: E402
from samfast.backends.openvino_backend import cpu_supports  # noqa: E402
from samfast.errors import InputError  # noqa: E402
from samfast.eval.parity import compare_predictors, tolerance_for  # noqa: E402
from samfast.preprocess import normalize_mr_putz  # noqa: E402


@pytest.fixture(scope="module")
def slices(demo_cases) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for volume, mask in demo_cases.values():
        scaled = normalize_mr_putz(volume)
        out += [(scaled[z], mask[z]) for z in tumour_slices(mask, 1)]
    return out


def test_openvino_fp32_keeps_parity_with_the_torch_reference(slices):
    assert "openvino" in BACKENDS
    reference = Predictor("litemedsam", backend="torch")
    candidate = Predictor("litemedsam", backend="openvino", threads=2)
    assert candidate.describe()["backend"] == "openvino"
    report = compare_predictors(reference, candidate, slices, "openvino", "fp32")
    summary = report.summary()
    assert report.passed, summary
    assert summary["min_mask_dice"] >= 0.999 and summary["max_iou_delta"] <= 1e-3


@pytest.mark.skipif(not cpu_supports("bf16"), reason="no native bf16 on this CPU (AVX-512 BF16 / AMX)")
def test_openvino_bf16_is_opt_in_and_close_but_judged_by_its_own_row(slices):
    fp32 = Predictor("litemedsam", backend="openvino", threads=2)
    bf16 = Predictor("litemedsam", backend="openvino", precision="bf16", threads=2)
    assert fp32.describe()["precision"] == "fp32" and bf16.describe()["precision"] == "bf16"
    tolerance = tolerance_for("openvino", "bf16")  # registered by the backend module
    assert tolerance.rtol is None and tolerance.min_mask_dice == 0.99
    image = slices[0][0]
    fp32.set_image(image)
    bf16.set_image(image)
    a, b = fp32.get_image_embedding(), bf16.get_image_embedding()
    relative = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert 0 < relative < 0.1  # really reduced precision, yet the same embedding


def test_openvino_refuses_what_it_cannot_run():
    with pytest.raises(InputError, match="CPU"):
        Predictor("litemedsam", backend="openvino", device="cuda")
    with pytest.raises(InputError, match="precision"):
        Predictor("litemedsam", backend="openvino", precision="fp16")


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_released_graphs_hand_back_their_sessions_and_reopen_the_same(slices, backend):
    predictor = Predictor("litemedsam", backend=backend, threads=2)
    batch = predictor.prepare_image(slices[0][0])[None]
    before = predictor.backend.encode(batch)
    held = predictor.backend._graphs
    assert predictor.backend.info.releases_graphs and "encoder" in held
    predictor.backend.release("encoder")
    assert "encoder" not in held
    np.testing.assert_array_equal(predictor.backend.encode(batch), before)  # reopened on use
    predictor.backend.release()
    assert not held


def test_encoder_is_static_for_its_first_batch_and_turns_dynamic_once_for_another(slices):
    # One thread: one request for every batch (with more, a batch runs one request per core,
    # tests/test_openvino_per_slice.py).
    predictor = Predictor("litemedsam", backend="openvino", threads=1)
    one = predictor.prepare_image(slices[0][0])[None]
    two = np.concatenate([one, predictor.prepare_image(slices[1][0])[None]])
    first = predictor.backend.encode(one)
    assert predictor.backend._graphs["encoder"][2] == one.shape  # compiled for this shape
    pair = predictor.backend.encode(two)  # another batch: recompiled with the dynamic batch
    assert predictor.backend._graphs["encoder"][2] is None and len(predictor.backend._graphs) == 1
    again = predictor.backend.encode(one)  # the dynamic graph serves every batch from now on
    assert predictor.backend._graphs["encoder"][2] is None
    np.testing.assert_allclose(pair[:1], first, rtol=0, atol=1e-4)
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-4)
