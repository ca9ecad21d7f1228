"""TorchScript backend over the project's own traced encoder.pt / decoder.pt (no model code needed).

fp32 on the CPU or CUDA; fp16/bf16 through autocast on CUDA only, as the torch backend.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from samfast.backends.base import BackendInfo, HoldsItsGraphs, Prompts, info_fields
from samfast.errors import InputError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_FILES = ("encoder.pt", "decoder.pt")
_METADATA_FILE = "samfast.json"


class TorchScriptBackend(HoldsItsGraphs):
    name = "torchscript"

    def __init__(self, folder: Path, low_res_size: int, device: str = "cpu", precision: str = "fp32") -> None:
        if precision not in _DTYPES:
            raise InputError(f"precision {precision!r} unknown; choose one of {', '.join(_DTYPES)}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(f"device {device!r} unknown; use cpu, cuda or cuda:N") from None
        if self.device.type not in ("cpu", "cuda"):
            raise InputError(f"device {device!r} not supported by the torchscript backend; use cpu or cuda")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device cuda asked for, but torch sees no CUDA GPU")
        if precision != "fp32" and self.device.type != "cuda":
            raise InputError(f"precision {precision} needs a CUDA device; TorchScript on the CPU runs fp32")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"TorchScript folder {self.folder} does not exist; export it first")
        self.low_res_size = int(low_res_size)
        self.precision = precision
        self.info = BackendInfo(self.name, str(self.device), precision)
        self.metadata: dict[str, dict] = {}
        self.encoder, self.decoder = (self._load(file) for file in _FILES)
        made_for = self.metadata["decoder"].get("low_res_size")
        if made_for is not None and int(made_for) != self.low_res_size:
            raise InputError(
                f"{self.folder / 'decoder.pt'} was made for low-res size {made_for}, not {self.low_res_size}"
            )

    def _load(self, file: str) -> torch.jit.ScriptModule:
        path = self.folder / file
        if not path.is_file():
            raise InputError(f"TorchScript file {path} is missing; export the set again")
        extra = {_METADATA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
                module = torch.jit.load(str(path), map_location=self.device, _extra_files=extra)
        except (RuntimeError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputError(f"{path} is not a loadable TorchScript file ({first})") from None
        try:
            self.metadata[file.removesuffix(".pt")] = json.loads(extra[_METADATA_FILE] or "{}")
        except ValueError:
            raise InputError(f"{path} carries unreadable {_METADATA_FILE} metadata") from None
        return module.eval()

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=self.device)

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> np.ndarray:
        with self._autocast():
            embeddings = self.encoder(self._tensor(images))
        return embeddings.float().cpu().numpy()

    @torch.inference_mode()
    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        feeds = prompts.to_sam_onnx(self.low_res_size)
        with self._autocast():
            iou, masks = self.decoder(
                self._tensor(embedding),
                self._tensor(feeds["point_coords"]),
                self._tensor(feeds["point_labels"]),
                self._tensor(feeds["mask_input"]),
                self._tensor(feeds["has_mask_input"]),
            )
        return masks.float().cpu().numpy(), iou.float().cpu().numpy()

    def describe(self) -> dict:
        meta = self.metadata.get("encoder", {})
        return info_fields(self.info) | {
            "torch": torch.__version__,
            "artifacts": str(self.folder),
            "exported_with": {"samfast": meta.get("samfast_version"), "torch": meta.get("torch_version")},
        }
