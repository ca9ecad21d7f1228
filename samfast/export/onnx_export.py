"""Export a registry model's encoder and decoder to ONNX, with metadata and a manifest.

Runs under torch.no_grad (ViT-H otherwise passes 24 GiB) and writes big graphs with one data file.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from segment_anything.modeling import Sam

from samfast.export.manifest import (
    EXPORT_SCHEMA,
    file_entries,
    software_versions,
    utc_now,
    write_manifest,
)
from samfast.export.wrappers import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    DecoderForExport,
    EncoderForExport,
    example_decoder_inputs,
    example_encoder_inputs,
)

DEFAULT_OPSET = 17
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
# protobuf cannot hold more than 2 GiB; stay clear of it.
_EXTERNAL_DATA_THRESHOLD = 1 << 30

ENCODER_DYNAMIC_AXES = {"images": {0: "slices"}, "image_embeddings": {0: "slices"}}
DECODER_DYNAMIC_AXES = {
    "point_coords": {0: "prompts", 1: "points"},
    "point_labels": {0: "prompts", 1: "points"},
    "mask_input": {0: "prompts"},
    "iou_predictions": {0: "prompts"},
    "low_res_masks": {0: "prompts"},
}


def expected_manifest_fields(model_name: str, weights, opset: int, precision: str = "fp32") -> dict:
    """The manifest fields that decide whether a cached export can be reused."""
    return {
        "model": model_name,
        "format": "onnx",
        "precision": precision,
        "opset": opset,
        "schema": EXPORT_SCHEMA,
        "weights": {k: v for k, v in weights.as_dict().items() if k != "path"},
    }


def _export_graph(module, args, path: Path, inputs, outputs, axes, opset: int, props: dict) -> None:
    raw_dir = path.parent / f".raw-{path.stem}"
    raw_dir.mkdir()
    raw = raw_dir / path.name
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python ints
        torch.onnx.export(
            module,
            args,
            str(raw),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(raw))  # pulls in any per-tensor external files the exporter wrote
    onnx.helper.set_model_props(proto, props)
    big = proto.ByteSize() > _EXTERNAL_DATA_THRESHOLD
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=big,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data" if big else None,
    )
    shutil.rmtree(raw_dir)


def export_onnx(
    model: Sam, out_dir: str | Path, opset: int = DEFAULT_OPSET, log: Callable[[str], None] = print
) -> dict:
    """Write encoder.onnx, decoder.onnx and manifest.json into ``out_dir`` atomically.

    Everything goes to a temporary sibling folder that is renamed into place at the end, so an
    interrupted export never leaves a set that looks complete.
    """
    spec, weights = model.samfast_spec, model.samfast_weights
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    props = {
        "samfast_version": software_versions()["samfast"],
        "model": spec.name,
        "weights": weights.label,
        "input_size": str(spec.input_size),
        "created": utc_now(),
    }
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        log(f"exporting {spec.name} encoder to ONNX (opset {opset})")
        _export_graph(
            EncoderForExport(model),
            example_encoder_inputs(spec, batch=2),
            tmp / ENCODER_FILE,
            ENCODER_INPUTS,
            ENCODER_OUTPUTS,
            ENCODER_DYNAMIC_AXES,
            opset,
            props | {"graph": "encoder"},
        )
        log(f"exporting {spec.name} decoder to ONNX")
        _export_graph(
            DecoderForExport(model),
            example_decoder_inputs(spec),
            tmp / DECODER_FILE,
            DECODER_INPUTS,
            DECODER_OUTPUTS,
            DECODER_DYNAMIC_AXES,
            opset,
            props | {"graph": "decoder"},
        )
        names = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = expected_manifest_fields(spec.name, weights, opset) | {
            "created": props["created"],
            "checkpoint_path": weights.path,
            "export_seconds": round(time.perf_counter() - started, 1),
            "versions": software_versions(),
            "input_size": spec.input_size,
            "embedding_shape": list(spec.embedding_shape),
            "low_res_size": spec.low_res_size,
            "normalization": spec.normalization,
            "encoder": {
                "file": ENCODER_FILE,
                "inputs": ENCODER_INPUTS,
                "outputs": ENCODER_OUTPUTS,
                "dynamic_axes": ENCODER_DYNAMIC_AXES,
            },
            "decoder": {
                "file": DECODER_FILE,
                "inputs": DECODER_INPUTS,
                "outputs": DECODER_OUTPUTS,
                "dynamic_axes": DECODER_DYNAMIC_AXES,
            },
            "files": file_entries(tmp, names),
        }
        write_manifest(tmp, manifest)
        _replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out_dir} in {manifest['export_seconds']} s")
    return manifest


def _replace_folder(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
