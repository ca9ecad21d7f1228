"""Export a registry model's encoder and decoder to ONNX, with metadata and a manifest.

Runs under torch.no_grad (ViT-H otherwise passes 24 GiB) and writes big graphs with one data file.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from segment_anything.modeling import Sam

from samfast.artifacts.graphs import (
    DECODER_FILE,
    DEFAULT_OPSET,
    ENCODER_FILE,
    IMAGE_SIDE_FILE,
    PROMPT_SIDE_FILE,
)
from samfast.artifacts.manifest import software_versions, utc_now
from samfast.export import split_decoder
from samfast.export.set_writer import build_set
from samfast.export.wrappers import (
    DECODER_DYNAMIC_AXES,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_DYNAMIC_AXES,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    DecoderForExport,
    EncoderForExport,
    example_decoder_inputs,
    example_encoder_inputs,
    graph_entries,
)

# protobuf cannot hold more than 2 GiB; stay clear of it.
_EXTERNAL_DATA_THRESHOLD = 1 << 30


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
    # Sum the tensors: ByteSize() of a whole proto past 2 GiB is exactly what cannot be serialised.
    big = sum(t.ByteSize() for t in proto.graph.initializer) > _EXTERNAL_DATA_THRESHOLD
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=big,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data" if big else None,
    )
    shutil.rmtree(raw_dir)


def write_onnx(
    model: Sam, folder: Path, opset: int = DEFAULT_OPSET, log: Callable[[str], None] = print
) -> dict:
    """Write encoder.onnx and decoder.onnx into ``folder``; return their manifest entries."""
    spec, weights = model.samfast_spec, model.samfast_weights
    props = {
        "samfast_version": software_versions()["samfast"],
        "model": spec.name,
        "weights": weights.label,
        "input_size": str(spec.input_size),
        "created": utc_now(),
    }
    log(f"exporting {spec.name} encoder to ONNX (opset {opset})")
    _export_graph(
        EncoderForExport(model, separate_qkv=True, channels_last=True),
        example_encoder_inputs(spec, batch=2),
        folder / ENCODER_FILE,
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
        folder / DECODER_FILE,
        DECODER_INPUTS,
        DECODER_OUTPUTS,
        DECODER_DYNAMIC_AXES,
        opset,
        props | {"graph": "decoder"},
    )
    entries = graph_entries(ENCODER_FILE, DECODER_FILE)
    entries.update(_write_split_decoder(model, folder, opset, props, log))
    return entries


def _write_split_decoder(model: Sam, folder: Path, opset: int, props: dict, log) -> dict:
    log(f"exporting {model.samfast_spec.name} decoder split at the prompt (image side, prompt side)")
    image_side = split_decoder.DecoderImageSide(model)
    example = example_decoder_inputs(model.samfast_spec)[0].repeat(2, 1, 1, 1)
    with torch.no_grad():
        state = image_side(example)
    sd = split_decoder
    graphs = {
        "decoder_image": (
            image_side,
            (example,),
            IMAGE_SIDE_FILE,
            sd.IMAGE_SIDE_INPUTS,
            sd.STATE_NAMES,
            sd.IMAGE_SIDE_DYNAMIC_AXES,
        ),
        "decoder_prompt": (
            sd.DecoderPromptSide(model),
            sd.example_prompt_side_inputs(state),
            PROMPT_SIDE_FILE,
            sd.PROMPT_SIDE_INPUTS,
            sd.PROMPT_SIDE_OUTPUTS,
            sd.PROMPT_SIDE_DYNAMIC_AXES,
        ),
    }
    entries = {}
    for role, (module, args, name, inputs, outputs, axes) in graphs.items():
        _export_graph(module, args, folder / name, inputs, outputs, axes, opset, props | {"graph": role})
        entries[role] = {"file": name, "inputs": inputs, "outputs": outputs, "dynamic_axes": axes}
    return entries


def export_onnx(
    model: Sam,
    out_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    log: Callable[[str], None] = print,
    verify: Callable[[Path], dict] | None = None,
) -> dict:
    """Write an onnx-fp32 set (graphs + manifest.json) into ``out_dir`` atomically."""
    return build_set(
        Path(out_dir),
        model.samfast_spec,
        model.samfast_weights,
        "onnx",
        "fp32",
        opset,
        lambda tmp: write_onnx(model, tmp, opset, log),
        verify,
        log,
    )
