"""TensorRT engines: FP16 build with norms in FP32, timing cache, refusal elsewhere, parity on BraTS.

Every test but the first needs TensorRT and a CUDA GPU and is skipped, with the reason, without them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CASES, tumour_slices

from samfast.backends.tensorrt_backend import TensorRTBackend
from samfast.errors import InputError
from samfast.export.tensorrt_build import tensorrt_available, write_engines

AVAILABLE, REASON = tensorrt_available()
tensorrt_here = pytest.mark.skipif(not AVAILABLE, reason=REASON or "TensorRT is available")

SLICES_PER_CASE = 3
SHIFT = 6  # px: boxes a user draws are seldom tight to the pixel
LIMITS = {"max_slices": 4, "max_prompts": 8, "max_points": 4}  # small profiles build faster


def test_imports_and_refusal_without_tensorrt(tmp_path):
    """Runs everywhere: the modules import without TensorRT, and the backend refuses with one line."""
    import samfast.backends.tensorrt_backend  # noqa: F401
    import samfast.export.tensorrt_build  # noqa: F401

    available, reason = tensorrt_available()
    assert isinstance(available, bool) and isinstance(reason, str)
    if available:
        assert reason == ""
        pytest.skip("TensorRT and a GPU are here; the refusal path is for machines without them")
    assert reason and "\n" not in reason
    with pytest.raises(InputError) as error:
        TensorRTBackend(tmp_path, 256)
    assert reason in str(error.value) and "\n" not in str(error.value)


# -- with TensorRT and a GPU ----------------------------------------------------------------


@pytest.fixture(scope="module")
def built(engine_dir, tmp_path_factory):
    from samfast.artifacts.manifest import write_manifest
    from samfast.export.cache import ensure_onnx
    from samfast.models import get_spec, resolve_weights

    onnx_folder = ensure_onnx("litemedsam", resolve_weights("litemedsam"), engine_dir)
    root = tmp_path_factory.mktemp("tensorrt")
    folder, cache = root / "engine-fp16", root / "timing.cache"
    spec = get_spec("litemedsam")
    fragment = write_engines(onnx_folder, folder, spec, "fp16", timing_cache=cache, **LIMITS)
    write_manifest(folder, fragment | {"model": "litemedsam", "format": "engine"})
    return {"onnx": onnx_folder, "folder": folder, "cache": cache, "fragment": fragment}


@pytest.mark.tensorrt
@tensorrt_here
def test_fp16_build_pins_norms_and_records_profiles(built):
    fragment = built["fragment"]
    assert fragment["precision"] == "fp16"
    assert fragment["fp32_pinned_layers"]["encoder"] > 0
    assert fragment["fp32_pinned_layers"]["decoder"] > 0
    assert (built["folder"] / "encoder.engine").stat().st_size > 0
    assert (built["folder"] / "decoder.engine").stat().st_size > 0
    assert fragment["encoder"]["profile"]["images"][2] == [LIMITS["max_slices"], 3, 256, 256]
    decoder = fragment["decoder"]["profile"]
    assert decoder["point_coords"][2] == [LIMITS["max_prompts"], LIMITS["max_points"] + 2, 2]
    assert decoder["mask_input"][2] == [LIMITS["max_prompts"], 1, 256, 256]
    assert decoder["image_embeddings"][0] == decoder["image_embeddings"][2] == [1, 256, 64, 64]
    assert fragment["compute_capability"] and fragment["tensorrt"] and fragment["gpu_name"]


@pytest.mark.tensorrt
@tensorrt_here
def test_timing_cache_is_saved_and_reused(built, tmp_path):
    from samfast.models import get_spec

    cache = built["cache"]
    assert cache.is_file() and cache.stat().st_size > 0
    assert built["fragment"]["timing_cache"] == str(cache)
    size = cache.stat().st_size
    again = write_engines(
        built["onnx"], tmp_path / "again", get_spec("litemedsam"), "fp16", timing_cache=cache, **LIMITS
    )
    assert again["timing_cache_loaded_bytes"] == size
    assert cache.stat().st_size >= size


@pytest.mark.tensorrt
@tensorrt_here
def test_engines_from_another_gpu_are_refused(built, tmp_path):
    import shutil

    folder = tmp_path / "elsewhere"
    shutil.copytree(built["folder"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["compute_capability"] = "1.0"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="rebuild") as error:
        TensorRTBackend(folder, 256)
    assert "sm_1.0" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.tensorrt
@tensorrt_here
def test_inputs_beyond_the_profile_are_refused(built):
    from samfast.backends.base import Prompts

    backend = TensorRTBackend(built["folder"], 256)
    with pytest.raises(InputError, match=f"limit of {LIMITS['max_slices']}"):
        backend.encode(np.zeros((LIMITS["max_slices"] + 1, 3, 256, 256), np.float32))
    embedding = backend.encode(np.zeros((1, 3, 256, 256), np.float32))
    boxes = np.tile(np.array([[10, 10, 100, 100]], np.float32), (LIMITS["max_prompts"] + 1, 1))
    with pytest.raises(InputError, match="prompt sets"):
        backend.decode(embedding, Prompts(boxes=boxes))


def _shifted_boxes(box: np.ndarray, height: int, width: int) -> np.ndarray:
    shifts = [(0, 0), (SHIFT, 0), (-SHIFT, 0), (0, SHIFT), (0, -SHIFT)]
    boxes = np.array([box + np.array([dx, dy, dx, dy], np.float32) for dx, dy in shifts])
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height - 1)
    return boxes


@pytest.mark.tensorrt
@tensorrt_here
def test_fp16_engines_match_the_torch_reference_on_real_slices(built, demo_cases):
    from samfast import Predictor
    from samfast.eval.metrics import bounding_box
    from samfast.eval.parity import ParityChecker
    from samfast.preprocess import normalize_mr_putz

    reference = Predictor("litemedsam", backend="torch")
    candidate = Predictor("litemedsam", backend="torch")
    candidate.backend = TensorRTBackend(built["folder"], 256)
    assert candidate.describe()["backend"] == "tensorrt"
    checker = ParityChecker("tensorrt", "fp16")
    for case in CASES:
        volume, label = demo_cases[case]
        scaled = normalize_mr_putz(volume)
        for z in tumour_slices(label, SLICES_PER_CASE):
            reference.set_image(scaled[z])
            candidate.set_image(scaled[z])
            checker.add_output(
                "image_embeddings", reference.get_image_embedding(), candidate.get_image_embedding()
            )
            boxes = _shifted_boxes(bounding_box(label[z]), *label[z].shape)
            for multimask in (False, True):
                ref = reference.predict_batch(boxes=boxes, multimask_output=multimask)
                got = candidate.predict_batch(boxes=boxes, multimask_output=multimask)
                checker.add_output("low_res_masks", ref[2], got[2])
                checker.add_output("iou_predictions", ref[1], got[1])
                for k in range(len(boxes)):
                    for c in range(ref[1].shape[1]):
                        checker.add_prompt(ref[0][k, c], got[0][k, c], ref[1][k, c], got[1][k, c])
    report = checker.report
    summary = report.summary()
    assert report.passed, summary
    assert summary["prompts"] == len(CASES) * SLICES_PER_CASE * 5 * (1 + 3)
