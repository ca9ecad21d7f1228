"""The one contract every backend keeps: encode slices, decode prompt sets, say what it is.

Backends know nothing about images or protocols: they take arrays already in the model's frame.
What a backend can do is stated in its ``info`` (a BackendInfo), never discovered by probing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

    def take(self, part: slice) -> Prompts:
        """Rows ``part`` of every field."""

        def take(value):
            return None if value is None else value[part]

        return Prompts(
            take(self.point_coords), take(self.point_labels), take(self.boxes), take(self.mask_input)
        )

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


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is and can do, fixed when it is made (the C++ Backend's name / device /
    precision, plus the abilities the Python runtime plans with)."""

    name: str  # "torch", "onnxruntime", ...
    device: str  # "cpu", "cuda:0", "tensorrt" (ONNX Runtime's execution provider)
    precision: str  # "fp32", "bf16", "fp16"
    split_decoder: bool = False  # decode() answers clicks from a kept image state of the embedding
    batched_rows: bool = False  # decode_rows() runs all rows in one decoder call
    device_tensors: bool = False  # encode_tensor(): device tensor in and out (torch on CUDA)
    releases_graphs: bool = False  # release() hands graphs' memory back (they reopen on next use)
    side_by_side: int = 1  # slices of a batch / decoder rows run this many at once, a core share each

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


@runtime_checkable
class Backend(Protocol):
    name: str
    info: BackendInfo

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 normalised slices -> (B, C, h, w) embeddings."""

    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """(1, C, h, w) embedding + B prompt sets -> (B, 4, L, L) low-res logits of all mask
        tokens and (B, 4) predicted IoUs, float32; the backend's fastest exact path (a person's
        click: with a split decoder, the embedding's image state is kept for the next one)."""

    def decode_rows(
        self, embeddings: np.ndarray, rows: Sequence[int], prompts: Prompts
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prompt set i against ``embeddings[rows[i]]`` (a program stepping many slices at once),
        with ``decode``'s outputs."""

    def release(self, *graphs: str) -> None:
        """Hand back the memory of the named graphs (all when none is named) where
        ``info.releases_graphs``; a no-op elsewhere."""

    def describe(self) -> dict:
        """Backend name, device, precision, versions: written into reports."""


def info_fields(info: BackendInfo) -> dict:
    """The description every backend's describe() starts with."""
    return {"backend": info.name, "device": info.device, "precision": info.precision}


def decode_each_row(
    decode: Callable[[np.ndarray, Prompts], tuple[np.ndarray, np.ndarray]],
    embeddings: np.ndarray,
    rows: Sequence[int],
    prompts: Prompts,
) -> tuple[np.ndarray, np.ndarray]:
    """decode_rows as one ``decode`` call per row: the exported graphs repeat one embedding over
    the prompt batch, and on the CPU decoder time grows with the batch anyway."""
    outs = [decode(embeddings[r : r + 1], prompts.take(slice(n, n + 1))) for n, r in enumerate(rows)]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


class HoldsItsGraphs:
    """The contract's defaults for backends that keep their graphs loaded for their lifetime (torch,
    TorchScript, TensorRT): rows decoded one call each, nothing to release."""

    def decode_rows(
        self, embeddings: np.ndarray, rows: Sequence[int], prompts: Prompts
    ) -> tuple[np.ndarray, np.ndarray]:
        return decode_each_row(self.decode, embeddings, rows, prompts)

    def release(self, *graphs: str) -> None:
        """Nothing to hand back (info.releases_graphs is False)."""
