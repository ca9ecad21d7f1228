"""PyTorch eager backend: the fp32 reference on the CPU, fp16/bf16 autocast on CUDA (bf16 also on
CPUs with native bf16, through oneDNN).

It calls segment-anything's own prompt encoder and mask decoder, so it is the yardstick for parity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam

from samfast.backends.base import BackendInfo, HoldsItsGraphs, Prompts, decode_each_row, info_fields
from samfast.errors import InputError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend(HoldsItsGraphs):
    name = "torch"

    def __init__(
        self, model: Sam, device: str = "cpu", precision: str = "fp32", batch_rows: bool | None = None
    ) -> None:
        """``batch_rows``: decode_rows in one decoder call (default: on a GPU only; on the CPU
        torch's decoder costs more per row in a batch, 56 ms a prompt alone, 101 ms in a batch of 8
        in bench/README.md, so rows go one by one there)."""
        if precision not in _DTYPES:
            raise InputError(f"precision {precision!r} unknown; choose one of {', '.join(_DTYPES)}")
        try:
            self.device = torch.device(device)
        except RuntimeError:
            raise InputError(f"device {device!r} unknown; use cpu, cuda or cuda:N") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device cuda asked for, but torch sees no CUDA GPU")
        if precision != "fp32" and self.device.type != "cuda":
            from samfast.backends.cpu import native_bf16

            # On the CPU, bf16 autocast runs on oneDNN's AVX-512 BF16 / AMX kernels; fp16 has none.
            if precision != "bf16" or not native_bf16():
                raise InputError(f"precision {precision} on the CPU needs native bf16 (AVX-512 BF16 or AMX)")
        self.precision = precision
        self.model = model.to(self.device).eval()
        on_cuda = self.device.type == "cuda"
        self.info = BackendInfo(
            self.name,
            str(self.device),
            precision,
            batched_rows=on_cuda if batch_rows is None else bool(batch_rows),
            device_tensors=on_cuda,
        )

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def _tensor(self, array: np.ndarray | None) -> torch.Tensor | None:
        if array is None:
            return None
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=self.device)

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> np.ndarray:
        with self._autocast():
            embeddings = self.model.image_encoder(self._tensor(images))
        return embeddings.float().cpu().numpy()

    @torch.inference_mode()
    def encode_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Device tensor in, device tensor out: the slice streamer's CUDA path, no host round trip."""
        with self._autocast():
            return self.model.image_encoder(images)

    @torch.inference_mode()
    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        points = None
        if prompts.point_coords is not None:
            points = (self._tensor(prompts.point_coords), self._tensor(prompts.point_labels).int())
        with self._autocast():
            sparse, dense = self.model.prompt_encoder(
                points=points, boxes=self._tensor(prompts.boxes), masks=self._tensor(prompts.mask_input)
            )
            # predict_masks returns all mask tokens; MaskDecoder.forward would only slice them.
            masks, iou = self.model.mask_decoder.predict_masks(
                image_embeddings=self._tensor(embedding),
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
            )
        return masks.float().cpu().numpy(), iou.float().cpu().numpy()

    def decode_rows(
        self, embeddings: np.ndarray, rows: Sequence[int], prompts: Prompts
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.info.batched_rows:
            return self.decode_batched(embeddings[list(rows)], prompts)
        return decode_each_row(self.decode, embeddings, rows, prompts)

    @torch.inference_mode()
    def decode_batched(self, embeddings: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """Prompt row i against embedding i (B embeddings, B prompt sets), in one decoder call.

        predict_masks repeats one embedding over the batch and adds the dense prompt embedding;
        handing it a zero embedding and ``embedding + dense`` gives each row its own slice's
        embedding with the same arithmetic (0 + x is exact)."""
        points = None
        if prompts.point_coords is not None:
            points = (self._tensor(prompts.point_coords), self._tensor(prompts.point_labels).int())
        embeddings = self._tensor(embeddings)
        with self._autocast():
            sparse, dense = self.model.prompt_encoder(
                points=points, boxes=self._tensor(prompts.boxes), masks=self._tensor(prompts.mask_input)
            )
            masks, iou = self.model.mask_decoder.predict_masks(
                image_embeddings=torch.zeros_like(embeddings[:1]),
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=embeddings + dense,
            )
        return masks.float().cpu().numpy(), iou.float().cpu().numpy()

    def describe(self) -> dict:
        return info_fields(self.info) | {"torch": torch.__version__}
