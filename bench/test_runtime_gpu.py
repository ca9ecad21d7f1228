"""GPU suite (``pytest bench -m gpu --benchmark-only``): skipped without a CUDA device.

LiteMedSAM encoder slices/s at batch 64 fp16, ViT-B / ViT-H encoder ms per slice (random weights:
speed only), decoder ms per prompt at batch 64, each beside torch eager fp32 on the same GPU,
variants interleaved as in test_runtime.py. Goals on an H100: ViT-H <= 25 ms, ViT-B <= 5 ms,
LiteMedSAM >= 2,000 slices/s, decoder <= 0.1 ms/prompt.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_runtime import click_prompts, interleaved, record

from samfast.backends.torch_backend import TorchBackend
from samfast.models import build_model, get_spec, resolve_weights

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine"),
]


def cuda_timed(fn):
    """A call that waits for the GPU, so wall time is GPU time."""

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def backends(model: str, random_weights: bool):
    from samfast.backends.torch_cuda import TorchCudaBackend

    sam = build_model(model, weights=resolve_weights(model, None, random_weights)).eval()
    return {
        "torch": TorchBackend(copy.deepcopy(sam), "cuda", "fp32"),
        "torch-fp16-sdpa-compiled": TorchCudaBackend(copy.deepcopy(sam), "cuda", "fp16", compile=True),
    }


@pytest.mark.parametrize(("model", "batch"), [("litemedsam", 64), ("vit_b", 8), ("vit_h", 4)])
def test_gpu_encoder_per_slice(benchmark, model, batch):
    benchmark.group = f"gpu-encoder-{model}"
    spec = get_spec(model)
    pair = backends(model, random_weights=model != "litemedsam")
    images = torch.randn(batch, 3, spec.input_size, spec.input_size, device="cuda")
    variants = {name: cuda_timed(lambda b=b: b.encode_tensor(images)) for name, b in pair.items()}
    stats = benchmark.pedantic(interleaved, args=(variants, 5), kwargs={"per": batch, "warmup": 2}, rounds=1)
    for entry in stats.values():
        entry["slices_per_s"] = 1.0 / entry["median_s"]
    record(
        benchmark,
        f"{model} encoder seconds per slice at batch {batch}",
        stats,
        gpu=torch.cuda.get_device_name(0),
    )


def test_gpu_decoder_per_prompt_batch64(benchmark):
    benchmark.group = "gpu-decoder-batch64"
    pair = backends("litemedsam", random_weights=False)
    embedding = np.random.default_rng(0).standard_normal((1, 256, 64, 64)).astype(np.float32)
    mask = np.zeros((240, 240), bool)
    mask[100:140, 100:150] = True
    prompts = click_prompts(64, mask, (240, 240), 256)
    variants = {name: (lambda b=b: b.decode(embedding, prompts)) for name, b in pair.items()}
    stats = benchmark.pedantic(interleaved, args=(variants, 10), kwargs={"per": 64, "warmup": 3}, rounds=1)
    record(benchmark, "decoder seconds per prompt at batch 64", stats, gpu=torch.cuda.get_device_name(0))
