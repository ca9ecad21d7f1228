"""The one small protocol every backend implements: encode slices, decode prompt batches.

Backends know nothing about images or protocols: they take arrays already in the model's frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Prompts:
    """B prompt sets for one image embedding, in the model's input frame (pixels of the padded square).

    Every field is None or has B rows: points (B, N, 2) x/y with labels (B, N) 1=fg 0=bg;
    boxes (B, 4) x0, y0, x1, y1; mask_input (B, 1, L, L) low-res logits from a previous call.
    """

    point_coords: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    mask_input: np.ndarray | None = None

    @property
    def batch(self) -> int:
        for value in (self.point_coords, self.boxes, self.mask_input):
            if value is not None:
                return int(value.shape[0])
        return 0

    def to_sam_onnx(self, low_res_size: int) -> dict[str, np.ndarray]:
        """segment-anything's ONNX convention: box corners are points labelled 2 and 3, and a
        padding point (label -1) stands in for a missing box. The PyTorch prompt encoder adds that
        padding itself, so only the exported decoder gets it, and only here."""
        batch = self.batch
        coords = [] if self.point_coords is None else [self.point_coords.astype(np.float32)]
        labels = [] if self.point_labels is None else [self.point_labels.astype(np.float32)]
        if self.boxes is not None:
            coords.append(self.boxes.reshape(batch, 2, 2).astype(np.float32))
            labels.append(np.tile(np.array([[2.0, 3.0]], np.float32), (batch, 1)))
        else:
            coords.append(np.zeros((batch, 1, 2), np.float32))
            labels.append(-np.ones((batch, 1), np.float32))
        has_mask = self.mask_input is not None
        mask = self.mask_input if has_mask else np.zeros((batch, 1, low_res_size, low_res_size))
        return {
            "point_coords": np.concatenate(coords, axis=1),
            "point_labels": np.concatenate(labels, axis=1),
            "mask_input": mask.astype(np.float32),
            "has_mask_input": np.array([1.0 if has_mask else 0.0], np.float32),
        }


@runtime_checkable
class Backend(Protocol):
    name: str

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 normalised slices -> (B, C, h, w) embeddings."""

    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """(1, C, h, w) embedding + B prompt sets -> (B, 4, L, L) low-res logits of all mask
        tokens and (B, 4) predicted IoUs, float32."""

    def describe(self) -> dict:
        """Backend name, device, precision, versions: written into reports."""


@runtime_checkable
class SplitDecoder(Protocol):
    """Optional: a backend whose decoder is split at the prompt (samfast.export.split_decoder).
    ``image_state`` runs once per embedding; ``decode_state`` answers prompts without a mask input
    from it, with the same outputs as ``decode``."""

    splits_decoder: bool

    def image_state(self, embeddings: np.ndarray) -> dict[str, np.ndarray]: ...

    def decode_state(
        self, state: dict[str, np.ndarray], prompts: Prompts
    ) -> tuple[np.ndarray, np.ndarray]: ...


def splits_decoder(backend) -> bool:
    return isinstance(backend, SplitDecoder) and bool(backend.splits_decoder)


def release(backend, *graphs: str) -> None:
    """Hand back the memory of a backend's named graphs (all when none is named) if it holds them
    in sessions it can reopen (ONNX Runtime, OpenVINO); other backends keep their modules."""
    close = getattr(backend, "release", None)
    if close is not None:
        close(*graphs)
