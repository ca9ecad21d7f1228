"""`samfast export`: ONNX, TorchScript and TensorRT sets for a registry model, each verified.

Exit 0 when every buildable set was written (formats this machine cannot build are skipped in one
line each), 2 on bad input or when only unbuildable formats were asked for, 1 on a parity failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from samfast.cli._common import guarded
from samfast.cli.options import Checkpoint, RandomWeights
from samfast.errors import InputError


def print_formats() -> None:
    from samfast.artifacts.formats import EXPORT_FORMATS

    table = Table("format", "suffix", "precisions", "needs", "loaded by", title="export formats")
    for f in EXPORT_FORMATS.values():
        needs = " + ".join(
            n for n, flag in (("CUDA GPU", f.needs_gpu), ("TensorRT", f.needs_tensorrt)) if flag
        )
        table.add_row(f.name, f.suffix, ", ".join(f.precisions), needs or "-", f"{f.backend} backend")
    Console().print(table)


@guarded
def export(
    model: Annotated[str | None, typer.Option("--model", "-m", help="vit_h, vit_b or litemedsam.")] = None,
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help="onnx, torchscript, engine or all (repeatable)."),
    ] = None,
    precision: Annotated[
        str, typer.Option("--precision", "-p", help="fp32 or fp16 (fp16: engines).")
    ] = "fp32",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Root folder (default: engines/).")] = None,
    checkpoint: Checkpoint = None,
    random_weights: RandomWeights = False,
    max_prompts: Annotated[
        int, typer.Option("--max-prompts", help="Decoder prompt batch limit (engines).")
    ] = 64,
    max_slices: Annotated[
        int, typer.Option("--max-slices", help="Encoder slice batch limit (engines).")
    ] = 16,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset.")] = 17,
    workspace_gib: Annotated[float, typer.Option("--workspace-gib", help="TensorRT workspace limit.")] = 4.0,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the parity check (not recommended).")
    ] = False,
    list_formats: Annotated[bool, typer.Option("--list", help="Print the format table and exit.")] = False,
) -> None:
    """Export encoder and decoder, check parity against PyTorch fp32 on real slices, write a manifest."""
    from samfast.eval.verify import verify_set
    from samfast.export.exporter import ExportRequest, export_model
    from samfast.export.set_writer import ParityFailure

    if list_formats:
        print_formats()
        return
    if not model:
        raise InputError("give --model (vit_h, vit_b, litemedsam) or --list")
    if max_prompts < 1 or max_slices < 1 or workspace_gib <= 0:
        raise InputError("--max-prompts, --max-slices and --workspace-gib must be positive")
    request = ExportRequest(
        model,
        formats or ["onnx"],
        precision,
        out,
        checkpoint,
        random_weights,
        opset,
        max_prompts,
        max_slices,
        workspace_gib=workspace_gib,
        verify=not no_verify,
    )
    console = Console(stderr=True)
    try:
        log = lambda m: console.print(m, markup=False, highlight=False)  # noqa: E731
        outcomes = export_model(request, log=log, verify_set=verify_set)
    except ParityFailure as failure:
        typer.echo(f"error: {failure}", err=True)
        raise typer.Exit(1) from None
    for outcome in outcomes:
        name = f"{outcome.fmt}-{outcome.precision}"
        if outcome.skipped:
            typer.echo(f"{name}: skipped, {outcome.skipped}")
            continue
        parity = outcome.manifest.get("parity")
        verdict = (
            "not verified (--no-verify)"
            if parity is None
            else (
                f"parity passed on {parity['prompts']} prompts: min mask Dice {parity['min_mask_dice']:.4f}, "
                f"max |Δ IoU| {parity['max_iou_delta']:.1e}"
            )
        )
        stamp = "  [RANDOM WEIGHTS]" if outcome.manifest["weights"]["random"] else ""
        typer.echo(f"{name}: wrote {outcome.folder} ({verdict}){stamp}")
