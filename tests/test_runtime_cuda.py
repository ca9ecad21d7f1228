"""The CUDA fast path: SDPA attention (checked on the CPU too), fp16 compiled decoder, streamer on CUDA.

The GPU tests skip without a CUDA device (none on the CPU developer machine); run them with
``pytest -m gpu tests/test_runtime_cuda.py`` on a GPU machine.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from samfast.backends import Prompts
from samfast.backends.torch_backend import TorchBackend
from samfast.backends.torch_cuda import use_sdpa
from samfast.models import build_model, resolve_weights

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.fixture(scope="module")
def sam():
    return build_model("litemedsam", weights=resolve_weights("litemedsam", None, False)).eval()


def prompts(batch: int = 2) -> Prompts:
    coords = np.array([[[120.0, 140.0], [60.0, 60.0]]] * batch, np.float32)
    return Prompts(point_coords=coords, point_labels=np.tile([[1.0, 0.0]], (batch, 1)).astype(np.float32))


def test_sdpa_attention_gives_the_eager_decoder_outputs(sam):
    reference = TorchBackend(sam)
    fused = TorchBackend(copy.deepcopy(sam))
    assert use_sdpa(fused.model.mask_decoder) == 7  # 2 blocks × 3 attentions + the final one
    embedding = np.random.default_rng(0).standard_normal((1, 256, 64, 64)).astype(np.float32)
    low, iou = reference.decode(embedding, prompts())
    fused_low, fused_iou = fused.decode(embedding, prompts())
    np.testing.assert_allclose(fused_low, low, atol=1e-3)
    np.testing.assert_allclose(fused_iou, iou, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_compiled_cuda_decoder_stays_close_to_fp32(sam, precision):
    from samfast.backends.torch_cuda import TorchCudaBackend

    reference = TorchBackend(copy.deepcopy(sam))
    fast = TorchCudaBackend(copy.deepcopy(sam), "cuda", precision, compile=True)
    embedding = np.random.default_rng(0).standard_normal((1, 256, 64, 64)).astype(np.float32)
    low, iou = reference.decode(embedding, prompts(8))
    for _ in range(3):  # capture, then replays must keep giving the same answer
        fast_low, fast_iou = fast.decode(embedding, prompts(8))
    agree = ((fast_low > 0) == (low > 0)).mean()
    assert agree > 0.99 and np.abs(fast_iou - iou).mean() < 0.005
    rows, _ = fast.decode_rows(np.repeat(embedding, 8, axis=0), range(8), prompts(8))
    np.testing.assert_allclose(rows, fast_low, atol=0.05)


@pytest.mark.gpu
@needs_cuda
def test_cuda_streamer_equals_the_cpu_path(sam, demo_cases):
    from samfast import Predictor
    from samfast.preprocess import normalize_mr_putz
    from samfast.runtime.streaming import stream_embeddings

    volume, _ = next(iter(demo_cases.values()))
    scaled = normalize_mr_putz(volume)
    cuda = Predictor("litemedsam", backend="torch", device="cuda")
    cpu = Predictor("litemedsam", backend="torch")
    zs = list(range(60, 70))
    got = dict(stream_embeddings(cuda, scaled, indices=zs, batch_size=4))
    for z in zs:
        cpu.set_image(scaled[z])
        np.testing.assert_allclose(got[z], cpu.get_image_embedding(), atol=1e-3)
