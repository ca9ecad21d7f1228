"""The CUDA fast path of the torch backend: fp16/bf16, SDPA attention, torch.compile + CUDA graphs.

Opt-in (``TorchCudaBackend(model, "cuda", "fp16")`` then ``Predictor.from_backend``): the plain
TorchBackend stays the eager reference. Same contract and encode_tensor.
"""

from __future__ import annotations

import types

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling.transformer import Attention

from samfast.backends.base import Prompts
from samfast.backends.torch_backend import TorchBackend
from samfast.errors import InputError


def _sdpa_forward(self: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention.forward with the fused kernel (flash / memory-efficient) in place of
    matmul + softmax + matmul; same projections, same 1/sqrt(d) scaling."""
    q = self._separate_heads(self.q_proj(q), self.num_heads)
    k = self._separate_heads(self.k_proj(k), self.num_heads)
    v = self._separate_heads(self.v_proj(v), self.num_heads)
    return self.out_proj(self._recombine_heads(F.scaled_dot_product_attention(q, k, v)))


def use_sdpa(module: torch.nn.Module) -> int:
    """Route every segment-anything Attention inside ``module`` through SDPA; returns how many.

    Instance-level, so other models in the process keep the original forward."""
    count = 0
    for child in module.modules():
        if isinstance(child, Attention):
            child.forward = types.MethodType(_sdpa_forward, child)
            count += 1
    return count


class TorchCudaBackend(TorchBackend):
    """torch on CUDA with reduced precision, SDPA, and a compiled decoder replayed as CUDA graphs.

    ``compile=True`` compiles the decoder with mode="reduce-overhead" (CUDA graphs: one graph per
    prompt-batch / point-count shape, captured on first use), and the encoder with the default
    mode; ``dynamic=False`` keeps every shape its own graph, which is what graph replay needs.
    """

    name = "torch"

    def __init__(self, model, device: str = "cuda", precision: str = "fp16", compile: bool = True) -> None:
        if not str(device).startswith("cuda"):
            raise InputError("TorchCudaBackend needs a CUDA device")
        super().__init__(model, device, precision)
        self.sdpa_layers = use_sdpa(self.model)
        self.compiled = compile
        self._decode_fn = self._decode_tensors
        self._encode_fn = self.model.image_encoder
        if compile:
            self._decode_fn = torch.compile(self._decode_tensors, mode="reduce-overhead", dynamic=False)
            self._encode_fn = torch.compile(self.model.image_encoder, dynamic=False)

    def _decode_tensors(self, embeddings, coords, labels, boxes, masks, rows: bool):
        points = None if coords is None else (coords, labels)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        image = torch.zeros_like(embeddings[:1]) if rows else embeddings
        return self.model.mask_decoder.predict_masks(
            image_embeddings=image,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=embeddings + dense if rows else dense,
        )

    def _run_decoder(self, embedding: np.ndarray, prompts: Prompts, rows: bool):
        labels = None if prompts.point_labels is None else self._tensor(prompts.point_labels).int()
        with torch.inference_mode(), self._autocast():
            masks, iou = self._decode_fn(
                self._tensor(embedding),
                self._tensor(prompts.point_coords),
                labels,
                self._tensor(prompts.boxes),
                self._tensor(prompts.mask_input),
                rows,
            )
            # Graph outputs are overwritten by the next replay: copy them out now.
            return masks.float().cpu().numpy(), iou.float().cpu().numpy()

    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        return self._run_decoder(embedding, prompts, rows=False)

    def decode_batched(self, embeddings: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        return self._run_decoder(embeddings, prompts, rows=True)

    @torch.inference_mode()
    def encode_tensor(self, images: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self._encode_fn(images).clone()

    def encode(self, images: np.ndarray) -> np.ndarray:
        return self.encode_tensor(self._tensor(images)).float().cpu().numpy()

    def describe(self) -> dict:
        return super().describe() | {"sdpa_layers": self.sdpa_layers, "compiled": self.compiled}
