"""The one table of export formats: suffixes, precisions, and what each needs to be built.

`samfast export --list`, the exporter and the backends all read this table, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    needs_gpu: bool
    needs_tensorrt: bool
    backend: str  # the runtime backend that loads this format
    description: str


EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "onnx",
            ".onnx",
            ("fp32",),
            False,
            False,
            "onnxruntime",
            "ONNX graphs (opset 17); external data for models over 1 GiB",
        ),
        ExportFormat(
            "torchscript",
            ".pt",
            ("fp32",),
            False,
            False,
            "torchscript",
            "traced TorchScript; loads with torch.jit.load and in LibTorch",
        ),
        ExportFormat(
            "engine",
            ".engine",
            ("fp32", "fp16"),
            True,
            True,
            "tensorrt",
            "TensorRT engines built from the ONNX graphs; tied to one GPU and TensorRT version",
        ),
    )
}


def set_name(fmt: str, precision: str) -> str:
    """Folder name of one exported set, e.g. onnx-fp32 or engine-fp16."""
    return f"{fmt}-{precision}"
