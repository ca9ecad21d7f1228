"""What a SAM model looks like to ONNX/TensorRT: an encoder graph and a batched decoder graph.

The model itself is not edited; these modules reshape it for export (segment-anything's own
SamOnnxModel convention: box corners are points labelled 2/3 and the caller adds the padding point).
"""

from __future__ import annotations

import copy
import types

import torch
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel
from torch import nn
from torch.nn import functional as F

ENCODER_INPUTS = ["images"]
ENCODER_OUTPUTS = ["image_embeddings"]
DECODER_INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"]
DECODER_OUTPUTS = ["iou_predictions", "low_res_masks"]
ENCODER_DYNAMIC_AXES = {"images": {0: "slices"}, "image_embeddings": {0: "slices"}}
DECODER_DYNAMIC_AXES = {
    "point_coords": {0: "prompts", 1: "points"},
    "point_labels": {0: "prompts", 1: "points"},
    "mask_input": {0: "prompts"},
    "iou_predictions": {0: "prompts"},
    "low_res_masks": {0: "prompts"},
}


def graph_entries(encoder_file: str, decoder_file: str) -> dict:
    """Manifest entries describing both graphs' interface, whatever the file format."""
    return {
        "encoder": {
            "file": encoder_file,
            "inputs": ENCODER_INPUTS,
            "outputs": ENCODER_OUTPUTS,
            "dynamic_axes": ENCODER_DYNAMIC_AXES,
        },
        "decoder": {
            "file": decoder_file,
            "inputs": DECODER_INPUTS,
            "outputs": DECODER_OUTPUTS,
            "dynamic_axes": DECODER_DYNAMIC_AXES,
        },
    }


def _merged_map(self, x: torch.Tensor) -> torch.Tensor:
    # TinyViT's PatchMerging takes the batch from len(x), which the tracer freezes to the example
    # batch; x.shape[0] stays symbolic, so the slice batch axis remains dynamic. Same maths.
    if x.ndim == 3:
        height, width = self.input_resolution
        x = x.view(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
    x = self.act(self.conv1(x))
    x = self.act(self.conv2(x))
    return self.conv3(x)


def _patch_merging_forward(self, x: torch.Tensor) -> torch.Tensor:
    return _merged_map(self, x).flatten(2).transpose(1, 2)


def _make_batch_traceable(encoder: nn.Module) -> None:
    for module in encoder.modules():
        if type(module).__name__ == "PatchMerging" and hasattr(module, "conv3"):
            module.forward = types.MethodType(_patch_merging_forward, module)


def _separate_qkv_forward(self, x: torch.Tensor) -> torch.Tensor:
    # TinyViT's Attention.forward with q, k and v from three Linears instead of one split.
    b, n, _ = x.shape
    x = self.norm(x)
    q, k, v = (proj(x).view(b, n, self.num_heads, -1).permute(0, 2, 1, 3) for proj in self.separate_qkv)
    bias = self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab
    attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.dh))


def _separate_qkv(encoder: nn.Module) -> None:
    """TinyViT's attention computes q, k, v with one Linear and splits its output per head; in the
    graph that split is a VariadicSplit OpenVINO's CPU plugin runs with a reference kernel (~2.5 %
    of the LiteMedSAM encoder). Three Linears holding qkv's rows of q, k and v compute the same
    dot products, with no split (5 % less encoder time on OpenVINO, 2-core CPU)."""
    for module in encoder.modules():
        if type(module).__name__ != "Attention" or not hasattr(module, "attention_bias_idxs"):
            continue
        heads, key_dim, value_dim = module.num_heads, module.key_dim, module.d
        per_head = 2 * key_dim + value_dim  # qkv's output rows: per head, q then k then v
        parts = nn.ModuleList()
        for start, stop in ((0, key_dim), (key_dim, 2 * key_dim), (2 * key_dim, per_head)):
            rows = torch.cat([torch.arange(h * per_head + start, h * per_head + stop) for h in range(heads)])
            linear = nn.Linear(module.qkv.in_features, len(rows))
            with torch.no_grad():
                linear.weight.copy_(module.qkv.weight[rows])
                linear.bias.copy_(module.qkv.bias[rows])
            parts.append(linear)
        module.separate_qkv = parts
        del module.qkv
        module.forward = types.MethodType(_separate_qkv_forward, module)


def _channels_last_block_forward(self, x: torch.Tensor) -> torch.Tensor:
    # TinyViTBlock.forward (eval: drop_path is the identity) with the local convolution's layout
    # changes written as 4-D permutes next to the Conv; see _channels_last_local_conv.
    height, width = self.input_resolution
    batch, tokens, channels = x.shape
    window = self.window_size
    shortcut = x
    if height == window and width == window:
        x = self.attn(x)
    else:
        x = x.view(batch, height, width, channels)
        pad_b, pad_r = (window - height % window) % window, (window - width % window) % window
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        rows, cols = (height + pad_b) // window, (width + pad_r) // window
        x = x.view(batch, rows, window, cols, window, channels).transpose(2, 3)
        x = self.attn(x.reshape(batch * rows * cols, window * window, channels))
        x = x.view(batch, rows, cols, window, window, channels).transpose(2, 3)
        x = x.reshape(batch, rows * window, cols * window, channels)
        if pad_b or pad_r:
            x = x[:, :height, :width].contiguous()
        x = x.view(batch, tokens, channels)
    x = shortcut + self.drop_path(x)
    x = self.local_conv(x.view(batch, height, width, channels).permute(0, 3, 1, 2))
    x = x.permute(0, 2, 3, 1).reshape(batch, tokens, channels)
    return x + self.drop_path(self.mlp(x))


def _channels_last_merging_forward(self, x: torch.Tensor) -> torch.Tensor:
    # _patch_merging_forward, its output taken back to tokens by one 4-D permute.
    x = _merged_map(self, x)
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def _channels_last_local_conv(encoder: nn.Module) -> None:
    """TinyViT takes tokens (B, L, C) to an image (B, C, H, W) for each depthwise convolution with a
    3-D transpose and a reshape, and back the same way. OpenVINO's CPU plugin runs the convolution
    channels-last, so it reorders the result to (B, C, H, W) and then transposes it back: two full
    copies per block (~7 % of the bf16 encoder). Written as 4-D permutes beside the Conv
    ((B, H, W, C) <-> (B, C, H, W)), the plugin folds them into the channels-last layout. Same
    values, element for element."""
    for module in encoder.modules():
        kind = type(module).__name__
        if kind == "TinyViTBlock":
            module.forward = types.MethodType(_channels_last_block_forward, module)
        elif kind == "PatchMerging" and hasattr(module, "conv3"):
            module.forward = types.MethodType(_channels_last_merging_forward, module)


class EncoderForExport(nn.Module):
    """Preprocessed slices (B, 3, S, S) -> image embeddings (B, C, h, w).

    ``separate_qkv`` rewrites TinyViT's attention for graph runtimes (see _separate_qkv); the ONNX
    sets use it. Same maths either way."""

    def __init__(self, model: Sam, separate_qkv: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        self.image_encoder = copy.deepcopy(model.image_encoder)
        _make_batch_traceable(self.image_encoder)
        if separate_qkv:
            _separate_qkv(self.image_encoder)
        if channels_last:
            _channels_last_local_conv(self.image_encoder)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(images)


class DecoderForExport(SamOnnxModel):
    """One embedding and B prompt sets -> all mask tokens' low-res logits and predicted IoUs.

    Unlike SamOnnxModel there is no ``orig_im_size`` input and no upscaling in the graph: shape
    inputs break TensorRT, and the runtime upscales. All 4 mask tokens are returned; the runtime
    picks token 0 (single mask) or 1..3 (multimask) exactly as MaskDecoder.forward slices them.
    """

    def __init__(self, model: Sam) -> None:
        super().__init__(model, return_single_mask=False)

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse_embedding = self._embed_points(point_coords, point_labels)
        dense_embedding = self._embed_masks(mask_input, has_mask_input)
        masks, scores = self.model.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse_embedding,
            dense_prompt_embeddings=dense_embedding,
        )
        return scores, masks


def example_encoder_inputs(spec, batch: int = 1) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 3, spec.input_size, spec.input_size),)


def example_decoder_inputs(spec, prompts: int = 2, points: int = 3) -> tuple[torch.Tensor, ...]:
    channels, height, width = spec.embedding_shape
    low = spec.low_res_size
    coords = torch.randint(0, spec.input_size, (prompts, points, 2)).float()
    labels = torch.tensor([[1.0] + [0.0] * (points - 3) + [2.0, 3.0]]).repeat(prompts, 1)
    return (
        torch.randn(1, channels, height, width),
        coords,
        labels,
        torch.randn(prompts, 1, low, low),
        torch.tensor([1.0]),
    )
