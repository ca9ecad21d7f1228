"""Where a set lives and whether the one there can be used: engines/<model>/<weights>/<fmt>-<precision>/.

Finding a set never builds one: a missing or stale set is reported (MissingSet), and the caller
decides whether to export it (samfast.export.cache.ensure_set) and says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from samfast.artifacts.formats import set_name
from samfast.artifacts.graphs import DEFAULT_OPSET, ENCODER_GRAPH, EXPORT_SCHEMA, SPLIT_DECODER
from samfast.artifacts.manifest import mismatch_reason
from samfast.errors import InputError

# backend -> the export format it runs (OpenVINO reads the ONNX set)
BACKEND_FORMATS = {
    "onnxruntime": "onnx",
    "openvino": "onnx",
    "torchscript": "torchscript",
    "tensorrt": "engine",
}


class MissingSet(InputError):
    """No usable set in ``folder`` (``reason``); ``buildable`` when export can make it on the fly."""

    def __init__(self, message: str, folder: Path, fmt: str, precision: str, reason: str) -> None:
        super().__init__(message)
        self.folder, self.fmt, self.precision, self.reason = folder, fmt, precision, reason

    @property
    def buildable(self) -> bool:
        return self.fmt != "engine"  # TensorRT engines only by `samfast export`, on the GPU


def default_engine_dir() -> Path:
    """$SAMFAST_ENGINES, else the source checkout's engines/, else ~/.cache/samfast/engines."""
    if os.environ.get("SAMFAST_ENGINES"):
        return Path(os.environ["SAMFAST_ENGINES"]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "engines").is_dir():
        return checkout / "engines"
    return Path.home() / ".cache" / "samfast" / "engines"


def set_dir(spec, weights, fmt: str, precision: str, engine_dir: Path | None = None) -> Path:
    return Path(engine_dir or default_engine_dir()) / spec.name / weights.tag / set_name(fmt, precision)


def set_opset(fmt: str, opset: int = DEFAULT_OPSET) -> int | None:
    """TorchScript sets have no opset."""
    return None if fmt == "torchscript" else opset


def expected_manifest_fields(
    model_name: str, weights, opset: int | None, precision: str = "fp32", fmt: str = "onnx"
) -> dict:
    """The manifest fields that decide whether a cached set can be reused."""
    fields = {
        "model": model_name,
        "format": fmt,
        "precision": precision,
        "opset": opset,
        "schema": EXPORT_SCHEMA,
        "weights": {k: v for k, v in weights.as_dict().items() if k != "path"},
    }
    if fmt == "onnx":  # ONNX sets also hold the split decoder; older graphs are rebuilt
        fields["split_decoder"] = SPLIT_DECODER
        fields["encoder_graph"] = ENCODER_GRAPH
    return fields


def find_set(
    spec,
    weights,
    fmt: str,
    precision: str = "fp32",
    engine_dir: Path | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """The folder of a valid set (manifest matches, every file hash checks out), else MissingSet."""
    folder = set_dir(spec, weights, fmt, precision, engine_dir)
    expected = expected_manifest_fields(spec.name, weights, set_opset(fmt, opset), precision, fmt)
    reason = mismatch_reason(folder, expected)
    if reason is None:
        return folder
    if fmt == "engine":
        message = (
            f"no usable TensorRT {precision} engines for {spec.name} in {folder} ({reason}): build them with "
            f"`samfast export --model {spec.name} --format engine --precision {precision}`"
        )
    else:
        message = (
            f"no usable {fmt} set for {spec.name} in {folder} ({reason}): build it with "
            f"`samfast export --model {spec.name} --format {fmt}`"
        )
    raise MissingSet(message, folder, fmt, precision, reason)
