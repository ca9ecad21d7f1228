"""OpenVINO's encoder on a batch of slices: one request per core, a slice each, the same rows as one
slice at a time."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the openvino extra is not installed")

from samfast.backends.openvino_backend import OpenVinoBackend, cpu_supports  # noqa: E402
from samfast.backends.openvino_compile import PER_SLICE_GRAPH, core_count  # noqa: E402
from samfast.models import get_spec, resolve_weights  # noqa: E402
from samfast.runtime.sets import backend_building_missing_set  # noqa: E402

PRECISIONS = ["fp32"] + (["bf16"] if cpu_supports("bf16") else [])


@pytest.fixture(scope="module")
def folder():
    backend = backend_building_missing_set(
        "onnxruntime", "tiny_vit_test", resolve_weights("tiny_vit_test"), log=lambda message: None
    )
    return backend.folder


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_batch_runs_one_request_per_core_and_gives_the_rows_of_single_slices(folder, precision):
    spec = get_spec("tiny_vit_test")
    backend = OpenVinoBackend(folder, spec.low_res_size, precision=precision, threads=2)
    side = spec.input_size
    images = np.random.default_rng(0).random((3, 3, side, side), dtype=np.float32)
    singles = np.concatenate([backend.encode(image[None]) for image in images])
    assert PER_SLICE_GRAPH not in backend._graphs  # one slice a call takes the one-request graph
    batch = backend.encode(images)
    held = backend._graphs[PER_SLICE_GRAPH][0]
    assert held.compiled.get_property("NUM_STREAMS") == 2
    assert batch.shape == singles.shape and batch.dtype == np.float32
    assert np.array_equal(batch, singles)
    assert np.array_equal(backend.encode(images[::-1]), singles[::-1])  # rows stay in order
    backend.release()
    assert not backend._graphs


def test_one_core_keeps_one_request_and_more_cores_share_two(folder):
    assert core_count(1) == 1 and core_count(3) == 3 and core_count(None) >= 1
    spec = get_spec("tiny_vit_test")
    images = np.zeros((2, 3, spec.input_size, spec.input_size), np.float32)
    single = OpenVinoBackend(folder, spec.low_res_size, threads=1)
    single.encode(images)
    assert PER_SLICE_GRAPH not in single._graphs
    wide = OpenVinoBackend(folder, spec.low_res_size, threads=3)
    wide.encode(images)
    assert wide._graphs[PER_SLICE_GRAPH][0].compiled.get_property("NUM_STREAMS") == 2
