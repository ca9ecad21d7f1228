"""The numpy resizing and mask upsampling agree with torch's, which the reference ran before.

The ONNX Runtime / OpenVINO path does its image geometry in numpy (no torch import); these tests
hold it to F.interpolate, segment-anything's ResizeLongestSide and Sam.postprocess_masks on
real demo slices, and check that those backends really never import torch.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from child import run_json
from conftest import REPO, tumour_slices
from segment_anything.utils.transforms import ResizeLongestSide

from samfast import preprocess

# One unit in the last place of float32 at 255, the top of the intensity range: numpy sums an
# antialiased kernel's taps in float64 and rounds once (two-tap bilinear in float32, as torch), and
# torch's loops round in float32 as they go.
ULP_255 = float(np.spacing(np.float32(255.0)))


def _torch_resize(array: np.ndarray, size, antialias: bool) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(array, np.float32))
    batch = tensor.reshape(-1, 1, *tensor.shape[-2:])
    out = F.interpolate(batch, size, mode="bilinear", align_corners=False, antialias=antialias)
    return out.reshape(*array.shape[:-2], *size).numpy()


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize(
    ("shape", "size"),
    [((240, 240), (256, 256)), ((240, 155), (256, 165)), ((300, 200), (1024, 683)), ((512, 384), (256, 192))],
)
def test_resize_bilinear_matches_f_interpolate_up_and_down(shape, size, antialias):
    image = np.random.default_rng(sum(shape)).uniform(0, 255, (2, *shape)).astype(np.float32)
    got = preprocess.resize_bilinear(image, size, antialias=antialias)
    np.testing.assert_allclose(got, _torch_resize(image, size, antialias), rtol=0, atol=2 * ULP_255)


def test_resize_longest_side_matches_samples_torch_resize_on_demo_slices(demo_cases):
    """apply_image_torch's interpolation (antialiased bilinear) on real, Putz-normalised MRI; a 1024
    side (ViT-H) upsamples, a 200 side (shrinking a 240 slice) takes the antialiasing filter."""
    volume, mask = demo_cases["BraTS20_Demo_001"]
    scaled = preprocess.normalize_mr_putz(volume)
    for z in tumour_slices(mask, 2):
        image = preprocess.to_three_channels(scaled[z])[:, :200]  # non-square, as a cropped slice
        for side in (256, 1024, 200):
            size = ResizeLongestSide.get_preprocess_shape(*image.shape[:2], side)
            reference = _torch_resize(image.transpose(2, 0, 1), size, True).transpose(1, 2, 0)
            got = preprocess.resize_longest_side(image, side)
            np.testing.assert_allclose(got, reference, rtol=0, atol=2 * ULP_255)


def test_prompt_geometry_matches_resize_longest_side():
    coords = np.random.default_rng(3).uniform(0, 200, (4, 5, 2))
    boxes = np.random.default_rng(4).uniform(0, 200, (3, 4))
    for size, side in (((240, 155), 256), ((155, 240), 1024), ((240, 240), 256)):
        upstream = ResizeLongestSide(side)
        assert preprocess.preprocess_shape(size, side) == upstream.get_preprocess_shape(*size, side)
        np.testing.assert_array_equal(
            preprocess.transform_coords(coords, size, side),
            upstream.apply_coords(coords, size).astype(np.float32),
        )
        np.testing.assert_array_equal(
            preprocess.transform_boxes(boxes, size, side),
            upstream.apply_boxes(boxes, size).astype(np.float32),
        )


def test_postprocess_masks_matches_sam_postprocess_masks_on_real_logits(demo_cases, engine_dir):
    """Low-res logits of the real LiteMedSAM decoder on a demo slice, upsampled by the Predictor
    (numpy) and by segment-anything's Sam.postprocess_masks (torch), for a square and a crop."""
    from segment_anything.modeling import Sam

    from samfast.runtime.predictor import Predictor

    predictor = Predictor("litemedsam", "onnxruntime", engine_dir=engine_dir)
    # Sam.postprocess_masks reads only image_encoder.img_size from the model
    sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=predictor.spec.input_size))
    volume, mask = demo_cases["BraTS20_Demo_002"]
    z = tumour_slices(mask, 1)[0]
    image, truth = preprocess.normalize_mr_putz(volume)[z], mask[z]
    for rows, cols in ((slice(None), slice(None)), (slice(20, None), slice(0, 190))):
        predictor.set_image(image[rows, cols])
        ys, xs = np.nonzero(truth[rows, cols])
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
        _, _, low_res = predictor.predict(box=box, multimask_output=True)
        shape = image[rows, cols].shape
        with torch.no_grad():
            reference = Sam.postprocess_masks(
                sam, torch.from_numpy(low_res[None]), predictor.input_size, shape
            )
        got = predictor.postprocess_masks(low_res[None])
        assert got.shape == reference.shape == (1, 3, *shape)
        np.testing.assert_allclose(got, reference.numpy(), rtol=1e-5, atol=1e-4)


_NO_TORCH = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "segment_anything"):
            raise ImportError(f"{name} is blocked: the {sys.argv[1]} path must not import it")
sys.meta_path.insert(0, Block())
import numpy as np
from samfast import Predictor
predictor = Predictor("litemedsam", sys.argv[1], engine_dir=sys.argv[2])
predictor.set_image(np.load(sys.argv[3]))
masks, iou, low = predictor.predict(box=np.array([60, 70, 140, 150]), multimask_output=False)
print(json.dumps({"area": int(masks.sum()), "iou": float(iou[0]), "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnxruntime_and_openvino_predictors_never_import_torch(backend, engine_dir, demo_cases, tmp_path):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="pip install .[openvino]")
    from samfast.export.cache import ensure_onnx
    from samfast.models import resolve_weights
    from samfast.runtime.predictor import Predictor

    ensure_onnx("litemedsam", resolve_weights("litemedsam"), engine_dir, log=lambda m: None)
    volume, mask = demo_cases["BraTS20_Demo_001"]
    image = preprocess.normalize_mr_putz(volume)[tumour_slices(mask, 1)[0]]
    np.save(tmp_path / "slice.npy", image)
    result = run_json(_NO_TORCH, backend, engine_dir, tmp_path / "slice.npy")
    assert result["torch"] is False
    same = Predictor("litemedsam", backend, engine_dir=engine_dir)
    same.set_image(image)
    masks, iou, _ = same.predict(box=np.array([60, 70, 140, 150]), multimask_output=False)
    assert result["area"] == int(masks.sum()) > 0 and abs(result["iou"] - float(iou[0])) < 1e-6


_COMMANDS_NO_TORCH = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "segment_anything"):
            raise ImportError(f"{name} is blocked: the onnxruntime path must not import it")
sys.meta_path.insert(0, Block())
from samfast.cli import app
volume, out = sys.argv[1], sys.argv[2]
done = {}
for name, args in (
    ("bench", ["bench", "brats", "--cases", "1", "--slices-per-case", "1", "--out", out + "/b"]),
    ("segment", ["segment", volume, "--box", "20", "20", "1", "70", "70", "2", "--out", out + "/m.nii.gz"]),
):
    try:
        app(args, standalone_mode=False)
        done[name] = 0
    except SystemExit as stop:
        done[name] = stop.code
from fastapi.testclient import TestClient
from samfast import Predictor
from samfast.serve.app import create_app
key = "k" * 24
client = TestClient(create_app(Predictor(), key, 2, 4, 2**24))
opened = client.post("/sessions", json={"path": volume}, headers={"X-API-Key": key})
session = opened.json()["session"]
clicked = client.post(
    f"/sessions/{session}/prompt", json={"slice": 1, "box": [20, 20, 70, 70]}, headers={"X-API-Key": key}
)
done["serve"] = clicked.status_code
print(json.dumps({"done": done, "torch": "torch" in sys.modules}))
"""


def test_bench_segment_and_serve_on_onnxruntime_never_import_torch(engine_dir, tmp_path):
    import SimpleITK as sitk

    from samfast.export.cache import ensure_onnx
    from samfast.models import resolve_weights

    ensure_onnx("litemedsam", resolve_weights("litemedsam"), engine_dir, log=lambda m: None)
    case = REPO / "data" / "brats_demo" / "BraTS20_Demo_001" / "BraTS20_Demo_001_t1ce.nii.gz"
    image = sitk.ReadImage(str(case))
    sitk.WriteImage(image[60:156, 90:186, 75:79], str(tmp_path / "crop.nii.gz"))  # 4 tumour slices
    result = run_json(_COMMANDS_NO_TORCH, tmp_path / "crop.nii.gz", tmp_path, timeout=600)
    assert result == {"done": {"bench": 0, "segment": 0, "serve": 200}, "torch": False}
    assert (tmp_path / "b" / "results.jsonl").stat().st_size > 0 and (tmp_path / "m.nii.gz").is_file()
