"""Exported-set backends on the CPU run a batch's slices and a program step's decoder rows side by
side, one call per core: the same outputs, bit for bit, as the calls one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from samfast.backends.base import Prompts
from samfast.backends.cpu import cores
from samfast.backends.exported_set import SIDE_BY_SIDE, side_by_side
from samfast.models import get_spec, resolve_weights
from samfast.runtime.sets import backend_building_missing_set

SPEC = get_spec("tiny_vit_test")


def _runs() -> list[tuple[str, str]]:
    runs = [("onnxruntime", "fp32")]
    try:
        from samfast.backends.openvino_backend import cpu_supports
    except ImportError:  # the openvino extra is not installed
        return runs
    return runs + [("openvino", p) for p in ("fp32", "bf16") if cpu_supports(p)]


@pytest.fixture(scope="module")
def folder():
    backend = backend_building_missing_set(
        "onnxruntime", "tiny_vit_test", resolve_weights("tiny_vit_test"), log=lambda message: None
    )
    return backend.folder


def _backend(name: str, folder, precision: str, threads: int):
    if name == "openvino":
        from samfast.backends.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(folder, SPEC.low_res_size, precision=precision, threads=threads)
    from samfast.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(folder, SPEC.low_res_size, precision=precision, threads=threads)


def _prompts(rows: int, seed: int, with_mask: bool) -> Prompts:
    rng = np.random.default_rng(seed)
    side = SPEC.input_size
    low = SPEC.low_res_size
    return Prompts(
        point_coords=rng.uniform(0.2 * side, 0.8 * side, (rows, 2, 2)).astype(np.float32),
        point_labels=np.tile(np.array([[1.0, 0.0]], np.float32), (rows, 1)),
        boxes=rng.uniform(0.1 * side, 0.4 * side, (rows, 2, 2)).cumsum(1).reshape(rows, 4).astype(np.float32),
        mask_input=rng.normal(0, 4, (rows, 1, low, low)).astype(np.float32) if with_mask else None,
    )


@pytest.mark.parametrize(("name", "precision"), _runs())
def test_slices_and_rows_side_by_side_equal_the_calls_one_at_a_time(folder, name, precision):
    backend = _backend(name, folder, precision, threads=2)
    assert backend.info.side_by_side == 2 and backend.describe()["side_by_side"] == 2
    side = SPEC.input_size
    images = np.random.default_rng(0).random((3, 3, side, side), dtype=np.float32)
    singles = np.concatenate([backend.encode(image[None]) for image in images])
    assert not any(key.endswith(SIDE_BY_SIDE) for key in backend._graphs)  # one slice: one call, all threads
    batch = backend.encode(images)
    assert ("encoder" + SIDE_BY_SIDE in backend._graphs) == backend.encoder_side_by_side
    assert batch.shape == singles.shape and batch.dtype == np.float32
    if backend.encoder_side_by_side:
        assert np.array_equal(batch, singles)
        assert np.array_equal(backend.encode(images[::-1]), singles[::-1])  # rows stay in order
    else:  # one batched call on all threads: the same within float rounding
        np.testing.assert_allclose(batch, singles, rtol=1e-4, atol=1e-4)
    batch = singles

    rows = [2, 0, 1, 2, 0]  # a program step: prompts on several slices, one slice more than once
    for with_mask, graph in ((False, "decoder_prompt"), (True, "decoder")):
        prompts = _prompts(len(rows), seed=len(graph), with_mask=with_mask)
        masks, iou = backend.decode_rows(batch, rows, prompts)
        assert graph + SIDE_BY_SIDE in backend._graphs
        for n, row in enumerate(rows):
            one = prompts.take(slice(n, n + 1))
            if with_mask:
                single_masks, single_iou = backend.decode_full(batch[row : row + 1], one)
            else:
                single_masks, single_iou = backend.decode(batch[row : row + 1], one)
            assert np.array_equal(masks[n : n + 1], single_masks), f"{graph} row {n}"
            assert np.array_equal(iou[n : n + 1], single_iou), f"{graph} row {n}"

    backend.release("encoder")  # a streamed volume hands its encoder back: both ways of running it
    assert not any(key.startswith("encoder") for key in backend._graphs)
    assert "decoder_prompt" + SIDE_BY_SIDE in backend._graphs
    backend.release()
    assert not backend._graphs


@pytest.mark.parametrize(("name", "precision"), _runs()[:2])
def test_one_thread_runs_every_call_in_turn(folder, name, precision):
    backend = _backend(name, folder, precision, threads=1)
    assert backend.info.side_by_side == 1
    side = SPEC.input_size
    embeddings = backend.encode(np.zeros((2, 3, side, side), np.float32))
    backend.decode_rows(embeddings, [0, 1], _prompts(2, seed=0, with_mask=False))
    assert not any(key.endswith(SIDE_BY_SIDE) for key in backend._graphs)


def test_calls_side_by_side_are_one_per_core_two_at_most_and_cpu_only():
    assert cores(3) == 3 and cores(None) >= 1
    assert side_by_side("cpu", 1) == 1
    assert side_by_side("cpu", 2) == 2
    assert side_by_side("cpu", 16) == 2
    assert side_by_side("cuda", 16) == 1 and side_by_side("tensorrt", None) == 1
