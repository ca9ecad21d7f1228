"""Trace a registry model's encoder and decoder to TorchScript files that LibTorch loads as they are.

Same export wrappers as ONNX, traced once and checked at other batch sizes and point counts.
"""

from __future__ import annotations

import copy
import json
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import nn

from samfast.artifacts.manifest import software_versions, utc_now
from samfast.export.wrappers import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    DecoderForExport,
    EncoderForExport,
    example_decoder_inputs,
    example_encoder_inputs,
    graph_entries,
)

ENCODER_FILE = "encoder.pt"
DECODER_FILE = "decoder.pt"
METADATA_FILE = "samfast.json"  # stored inside each .pt (torch.jit.save's _extra_files)
_CHECK_ATOL = 1e-4


class _DecoderSource(nn.Module):
    """What DecoderForExport reads from a Sam, minus the image encoder (a traced module keeps every
    submodule it holds) and with the dense positional encoding stored as a buffer: traced live,
    ``get_dense_pe`` builds its grid on a hard-coded CPU device and the file would not run on CUDA."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder = copy.deepcopy(model.prompt_encoder)
        self.mask_decoder = model.mask_decoder
        self.image_encoder = types.SimpleNamespace(img_size=model.image_encoder.img_size)
        self.mask_threshold = model.mask_threshold
        with torch.no_grad():
            self.prompt_encoder.register_buffer("dense_pe", self.prompt_encoder.get_dense_pe().clone())
        self.prompt_encoder.get_dense_pe = types.MethodType(lambda pe: pe.dense_pe, self.prompt_encoder)


def _decoder_check_inputs(spec) -> list[tuple[torch.Tensor, ...]]:
    """Other prompt counts and point counts than the traced example: 1 prompt with a lone padding
    point (no box) and no mask, 3 prompts with 4 points."""
    embedding, coords, _, mask, _ = example_decoder_inputs(spec, prompts=1, points=3)
    lone = (embedding, coords[:, :1], torch.tensor([[-1.0]]), mask, torch.tensor([0.0]))
    return [lone, example_decoder_inputs(spec, prompts=3, points=4)]


def _trace_checked(
    module: nn.Module, example: tuple, others: list[tuple], what: str
) -> torch.jit.ScriptModule:
    """Trace ``module`` at ``example``; fail if the graph gives other results than eager at
    ``others`` (a size the tracer froze into a constant shows up exactly there)."""
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings; the check below is what counts
        traced = torch.jit.trace(module, example, check_trace=False)
        for inputs in others:
            shapes = [tuple(t.shape) for t in inputs]
            try:
                expected, got = module(*inputs), traced(*inputs)
            except RuntimeError as error:
                raise RuntimeError(f"traced {what} fails at input shapes {shapes}: {error}") from None
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = got if isinstance(got, tuple) else (got,)
            for want, have in zip(expected, got, strict=True):
                if want.shape != have.shape or not torch.allclose(want, have, atol=_CHECK_ATOL, rtol=1e-3):
                    raise RuntimeError(f"traced {what} differs from eager at input shapes {shapes}")
    return traced


def _save(module: torch.jit.ScriptModule, path: Path, props: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.save is deprecated"
        torch.jit.save(module, str(path), _extra_files={METADATA_FILE: json.dumps(props, sort_keys=True)})


def write_torchscript(model: Sam, folder: Path, log: Callable[[str], None] = print) -> dict:
    """Write encoder.pt and decoder.pt into the existing ``folder``; return their manifest entries.

    Plain traced modules (no freezing, no Python-only ops): ``torch.jit.load`` in Python and in
    LibTorch C++ both read them. Each file carries samfast.json with the model and its weights.
    """
    spec, weights = model.samfast_spec, model.samfast_weights
    folder = Path(folder)
    props = {
        "samfast_version": software_versions()["samfast"],
        "torch_version": torch.__version__,
        "model": spec.name,
        "weights": weights.label,
        "input_size": spec.input_size,
        "low_res_size": spec.low_res_size,
        "created": utc_now(),
    }
    log(f"tracing {spec.name} encoder to TorchScript")
    encoder = _trace_checked(
        EncoderForExport(model),
        example_encoder_inputs(spec, batch=2),
        [example_encoder_inputs(spec, batch=1)],
        "encoder",
    )
    _save(encoder, folder / ENCODER_FILE, props | _io("encoder", ENCODER_INPUTS, ENCODER_OUTPUTS))
    log(f"tracing {spec.name} decoder to TorchScript")
    decoder = _trace_checked(
        DecoderForExport(_DecoderSource(model)),
        example_decoder_inputs(spec),
        _decoder_check_inputs(spec),
        "decoder",
    )
    _save(decoder, folder / DECODER_FILE, props | _io("decoder", DECODER_INPUTS, DECODER_OUTPUTS))
    return graph_entries(ENCODER_FILE, DECODER_FILE)


def _io(graph: str, inputs: list[str], outputs: list[str]) -> dict:
    return {"graph": graph, "inputs": inputs, "outputs": outputs}
