"""SAM's mask decoder split in two graphs, so an interactive click does less than half the work.

``DecoderImageSide`` runs once per embedding: everything in the decoder that does not depend on
the prompt (no mask input): the image tokens, and the first block's projections of them (the
token-to-image keys/values and the image-to-token queries). ``DecoderPromptSide`` takes those and
a prompt set and does the rest. Its cross attentions are re-associated around the few prompt
tokens t: ``softmax(Q_img K_tok^T) (V_tok W_o)`` instead of ``(softmax(Q_img K_tok^T) V_tok) W_o``,
and ``(Q_tok W_k^T) X^T`` instead of ``Q_tok (X W_k^T)^T``, so no 4096×256 by 256×128 projection of
image tokens is left; with t ≤ 16 the matrices multiplied are 8t wide. The mask upscaling runs
channels-last as two matmuls in the pixel order they produce; only the final logits are reordered.

Same maths as segment-anything's MaskDecoder.predict_masks, summed in another order (fp32
differences ~1e-5; tests hold it to the reference). Mask inputs take the full decoder graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel
from torch import Tensor, nn

from samfast.artifacts.graphs import STATE_NAMES

IMAGE_SIDE_INPUTS = ["image_embeddings"]
PROMPT_SIDE_INPUTS = [*STATE_NAMES, "point_coords", "point_labels"]
PROMPT_SIDE_OUTPUTS = ["iou_predictions", "low_res_masks"]
IMAGE_SIDE_DYNAMIC_AXES = {"image_embeddings": {0: "rows"}} | {n: {0: "rows"} for n in STATE_NAMES}
PROMPT_SIDE_DYNAMIC_AXES = (
    {n: {0: "rows"} for n in STATE_NAMES}
    | {"point_coords": {0: "prompts", 1: "points"}, "point_labels": {0: "prompts", 1: "points"}}
    | {"iou_predictions": {0: "prompts"}, "low_res_masks": {0: "prompts"}}
)


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, C) -> (B, heads, N, C/heads), as Attention._separate_heads."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """(B, heads, N, c) -> (B, N, heads·c), as Attention._recombine_heads."""
    b, h, n, c = x.shape
    return x.transpose(1, 2).reshape(b, n, h * c)


def _per_head(linear: nn.Linear, heads: int) -> tuple[Tensor, Tensor]:
    """A q/k/v projection's weight as (heads, c, C) and bias as (heads, 1, c)."""
    out_features, in_features = linear.weight.shape
    weight = linear.weight.reshape(heads, out_features // heads, in_features)
    return weight, linear.bias.reshape(heads, 1, out_features // heads)


def _token_to_image(attn, tokens_q: Tensor, image: Tensor, image_with_pe: Tensor) -> Tensor:
    """Attention(q=tokens_q, k=image_with_pe, v=image) without projecting the image tokens."""
    heads = attn.num_heads
    b, t, _ = tokens_q.shape
    scale = math.sqrt(attn.internal_dim // heads)
    q = _heads(attn.q_proj(tokens_q), heads)  # (B, h, t, c)
    wk, bk = _per_head(attn.k_proj, heads)
    wv, bv = _per_head(attn.v_proj, heads)
    # q·(x Wk^T + bk) = (q Wk)·x + q·bk: the second term is one number per query row.
    logits = (q @ wk).reshape(b, heads * t, -1) @ image_with_pe.transpose(1, 2)
    logits = logits.reshape(b, heads, t, -1) + q @ bk.transpose(1, 2)
    weights = torch.softmax(logits / scale, dim=-1)
    # softmax rows sum to 1, so softmax·(x Wv^T + bv) = (softmax·x) Wv^T + bv.
    mixed = (weights.reshape(b, heads * t, -1) @ image).reshape(b, heads, t, -1)
    return attn.out_proj(_merge(mixed @ wv.transpose(1, 2) + bv))


def _image_to_token_out(attn, logits: Tensor, tokens_v: Tensor) -> Tensor:
    """softmax over each head's t logits (B, HW, h, t), then values folded into out_proj."""
    heads = attn.num_heads
    b, hw, _, t = logits.shape
    weights = torch.softmax(logits / math.sqrt(attn.internal_dim // heads), dim=-1)
    v = _heads(attn.v_proj(tokens_v), heads)  # (B, h, t, c)
    wo = attn.out_proj.weight.t().reshape(heads, attn.internal_dim // heads, -1)  # (h, c, C)
    # Each head's softmax row sums to 1, so the h·t weights of a row sum to h: out_proj's bias,
    # shared out over the folded value rows, comes out of the matmul (no pass over B×HW×C).
    folded = (v @ wo + attn.out_proj.bias / heads).reshape(b, heads * t, -1)  # (B, h·t, C)
    return weights.reshape(b, hw, heads * t) @ folded


def _image_to_token(attn, image_q: Tensor, tokens_k: Tensor, tokens_v: Tensor) -> Tensor:
    """Attention(q=image_q, k=tokens_k, v=tokens_v) without projecting the image tokens."""
    heads = attn.num_heads
    b, t, _ = tokens_k.shape
    k = _heads(attn.k_proj(tokens_k), heads)  # (B, h, t, c)
    wq, bq = _per_head(attn.q_proj, heads)
    # (x Wq^T + bq)·k = x·(k Wq) + bq·k
    folded = (k @ wq).reshape(b, heads * t, -1)  # (B, h·t, C)
    logits = image_q @ folded.transpose(1, 2) + (k @ bq.transpose(1, 2)).reshape(b, 1, heads * t)
    return _image_to_token_out(attn, logits.reshape(b, -1, heads, t), tokens_v)


def _masks(decoder, image: Tensor, hyper_in: Tensor, size: tuple[int, int]) -> Tensor:
    """output_upscaling of (B, HW, C) image tokens, dotted with (B, M, c) hypernetwork outputs:
    (B, M, 4h, 4w) mask logits.

    ConvTranspose2d(k=2, s=2) writes each output pixel once: it is one matmul per input pixel,
    (Cin) -> (2, 2, Cout). Both run channels-last in the order they produce (h, w, i, j, k, l),
    and only the small final logits are put back into image order (rows 4h+2i+k, columns 4w+2j+l).
    """
    conv1, norm, act1, conv2, act2 = decoder.output_upscaling
    b = image.shape[0]
    h, w = size
    mid, out = conv1.weight.shape[1], conv2.weight.shape[1]
    x = _transpose_conv(conv1, image).reshape(b, h * w * 4, mid)
    x = act1(F.layer_norm(x, (mid,), norm.weight, norm.bias, norm.eps))
    x = act2(_transpose_conv(conv2, x).reshape(b, h * w * 16, out))
    logits = x @ hyper_in.transpose(1, 2)  # (B, h·w·i·j·k·l, M)
    m = hyper_in.shape[1]
    logits = logits.reshape(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return logits.reshape(b, m, 4 * h, 4 * w)


def _transpose_conv(conv: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """(B, N, Cin) pixels -> (B·N, 2·2·Cout), columns ordered (i, j, Cout). Two-dimensional, so
    it exports as one Gemm that adds the bias as it multiplies (no extra pass over the output)."""
    cin, cout = conv.weight.shape[:2]
    weight = conv.weight.permute(2, 3, 1, 0).reshape(4 * cout, cin)  # as nn.Linear stores it
    return F.linear(x.reshape(-1, cin), weight, conv.bias.repeat(4))


def _check_layout(model: Sam) -> None:
    decoder = model.mask_decoder
    conv1, _, _, conv2, _ = decoder.output_upscaling
    for conv in (conv1, conv2):
        if tuple(conv.kernel_size) != (2, 2) or tuple(conv.stride) != (2, 2):
            raise ValueError("split decoder needs SAM's 2×2 stride-2 upscaling")
    if len(decoder.transformer.layers) < 1 or not decoder.transformer.layers[0].skip_first_layer_pe:
        raise ValueError("split decoder needs SAM's TwoWayTransformer (first block without PE)")


class DecoderImageSide(nn.Module):
    """(B, C, h, w) embeddings -> the prompt-independent decoder state, B rows."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        _check_layout(model)
        self.model = model

    def forward(self, image_embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        prompt_encoder = self.model.prompt_encoder
        first = self.model.mask_decoder.transformer.layers[0]
        no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        tokens = (image_embeddings + no_mask).flatten(2).transpose(1, 2)  # (B, HW, C)
        with_pe = tokens + prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        return (
            tokens,
            _heads(t2i.k_proj(with_pe), t2i.num_heads),
            _heads(t2i.v_proj(tokens), t2i.num_heads),
            _heads(i2t.q_proj(with_pe), i2t.num_heads),
        )


class DecoderPromptSide(SamOnnxModel):
    """State rows (1 shared, or one per prompt set) + B prompt sets in segment-anything's ONNX
    convention (padding point given) -> (B, 4) predicted IoUs and (B, 4, L, L) low-res logits."""

    def __init__(self, model: Sam) -> None:
        super().__init__(model, return_single_mask=False)
        _check_layout(model)

    def forward(  # type: ignore[override]
        self,
        image_tokens: Tensor,
        t2i_keys: Tensor,
        t2i_values: Tensor,
        i2t_queries: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
    ) -> tuple[Tensor, Tensor]:
        decoder = self.model.mask_decoder
        transformer = decoder.transformer
        image_pe = self.model.prompt_encoder.get_dense_pe()
        h, w = image_pe.shape[-2:]
        image_pe = image_pe.flatten(2).transpose(1, 2)
        sparse = self._embed_points(point_coords, point_labels)
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        point_embedding = torch.cat([output_tokens.expand(sparse.shape[0], -1, -1), sparse], dim=1)

        first = transformer.layers[0]
        queries = first.norm1(first.self_attn(q=point_embedding, k=point_embedding, v=point_embedding))
        queries = first.norm2(
            queries + self._cached_token_to_image(first, queries + point_embedding, t2i_keys, t2i_values)
        )
        queries = first.norm3(queries + first.mlp(queries))
        attn = first.cross_attn_image_to_token
        k = _heads(attn.k_proj(queries + point_embedding), attn.num_heads)  # (B, h, t, c)
        logits = (i2t_queries @ k.transpose(2, 3)).transpose(1, 2)  # (B, HW, h, t)
        keys = first.norm4(image_tokens + _image_to_token_out(attn, logits, queries))

        for layer in transformer.layers[1:]:
            q = queries + point_embedding
            queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
            keys_pe = keys + image_pe
            t2i = _token_to_image(layer.cross_attn_token_to_image, queries + point_embedding, keys, keys_pe)
            queries = layer.norm2(queries + t2i)
            queries = layer.norm3(queries + layer.mlp(queries))
            i2t_attn = layer.cross_attn_image_to_token
            i2t = _image_to_token(i2t_attn, keys_pe, queries + point_embedding, queries)
            keys = layer.norm4(keys + i2t)
        # Only the IoU and mask tokens are read after the last attention: the prompt tokens need
        # no final update (queries attend independently there).
        outputs = 1 + decoder.num_mask_tokens
        queries, point_embedding = queries[:, :outputs], point_embedding[:, :outputs]
        final_attn = transformer.final_attn_token_to_image
        final = _token_to_image(final_attn, queries + point_embedding, keys, keys + image_pe)
        queries = transformer.norm_final_attn(queries + final)

        mask_tokens = queries[:, 1 : 1 + decoder.num_mask_tokens]
        hyper_in = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
        )
        masks = _masks(decoder, keys, hyper_in, (h, w))
        return decoder.iou_prediction_head(queries[:, 0]), masks

    @staticmethod
    def _cached_token_to_image(layer, tokens_q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        attn = layer.cross_attn_token_to_image
        q = _heads(attn.q_proj(tokens_q), attn.num_heads)
        weights = torch.softmax(q @ keys.transpose(2, 3) / math.sqrt(q.shape[-1]), dim=-1)
        return attn.out_proj(_merge(weights @ values))


def example_prompt_side_inputs(state: tuple[Tensor, ...], prompts: int = 2, points: int = 3):
    coords = torch.randint(0, 256, (prompts, points, 2)).float()
    labels = torch.tensor([[1.0] + [0.0] * (points - 3) + [2.0, 3.0]]).repeat(prompts, 1)
    return (*state, coords, labels)
