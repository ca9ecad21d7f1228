"""`samfast bench brats`: prompt protocols on BraTS cases, every backend side by side with the reference.

Resumable: rerunning with the same --out continues where an interrupted run stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from samfast.cli._common import guarded
from samfast.errors import InputError

app = typer.Typer(help="Benchmarks: accuracy parity with the reference and latency.", no_args_is_help=True)


@app.command("brats")
@guarded
def brats(
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="BraTS-layout folder (default: shipped demo cases).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Results folder (slices.jsonl, summary.json).")
    ] = Path("runs/bench-brats"),
    model: Annotated[str, typer.Option("--model", "-m", help="Registry model name.")] = "litemedsam",
    backends: Annotated[
        list[str] | None, typer.Option("--backend", help="Backend to run (repeatable).")
    ] = None,
    reference: Annotated[
        str, typer.Option("--reference", help="Backend the others are compared with.")
    ] = "torch",
    target: Annotated[
        str, typer.Option("--target", help="tc (labels 1|4), wt (1|2|4), et (4) or labels like 1,4.")
    ] = "tc",
    modality: Annotated[
        str, typer.Option("--modality", help="Image file suffix in the BraTS layout.")
    ] = "t1ce",
    min_area: Annotated[int, typer.Option("--min-area", help="Slices need this many target pixels.")] = 100,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Official checkpoint (sha256 checked).")
    ] = None,
    random_weights: Annotated[
        bool, typer.Option("--random-weights", help="Random weights (plumbing only).")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard earlier results in --out.")] = False,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="box (tight box, parity), points-putz, points-mazurowski, box-points or all.",
        ),
    ] = "box",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random prompt choices.")] = 0,
) -> None:
    """Prompt protocols on every target slice; --protocol box: Dice, 3D Dice, parity and speed."""
    from samfast import Predictor
    from samfast.eval.box_bench import run_box_bench
    from samfast.eval.datasets import find_brats_cases, target_labels
    from samfast.eval.parity import tolerance_for
    from samfast.eval.protocol_bench import PROTOCOLS
    from samfast.io import find_demo_data
    from samfast.models import get_spec

    if protocol not in (*PROTOCOLS, "all"):
        raise InputError(f"protocol {protocol!r}: use {', '.join(PROTOCOLS)} or all")
    backends = backends or ["onnxruntime", "torch"]
    if reference not in backends:
        backends.append(reference)
    target_labels(target)
    spec = get_spec(model)
    cases = find_brats_cases(data or find_demo_data(), modality)
    console = Console(stderr=True)
    predictors = {
        name: Predictor(
            spec.name,
            backend=name,
            device=device,
            checkpoint=checkpoint,
            random_weights=random_weights,
            log=lambda m: console.print(m, markup=False, highlight=False),
        )
        for name in backends
    }
    weights = next(iter(predictors.values())).weights
    config = {
        "protocol": "box-tight",
        "model": spec.name,
        "weights": weights.label,
        "target": target,
        "modality": modality,
        "min_area": min_area,
        "normalization": "putz",
        "device": device,
        "cases": [c.case_id for c in cases],
        "backends": sorted(backends),
        "reference": reference,
    }

    def progress(items, total):
        columns = (TextColumn("[bold]bench brats"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            yield from bar.track(items, total=total)

    if protocol != "box":
        from samfast.eval.protocol_bench import run_protocol_bench

        chosen = list(PROTOCOLS) if protocol == "all" else [protocol]
        config.update(protocol=protocol, protocols=chosen, seed=seed)
        summary = run_protocol_bench(cases, predictors, out, config, chosen, seed, min_area, fresh, progress)
        _print_protocols(summary, weights, out)
        return
    summary = run_box_bench(cases, predictors, out, config, min_area, fresh, progress)
    _print(summary, weights, out)
    failed = [
        name
        for name, p in summary.get("parity", {}).items()
        if (p["min_mask_dice"] or 0) < tolerance_for(name, "fp32").min_mask_dice
        or (p["max_iou_delta"] or 0) > tolerance_for(name, "fp32").max_iou_delta
    ]
    if failed:
        typer.echo(f"error: parity with {reference} failed for {', '.join(failed)}", err=True)
        raise typer.Exit(1)


def _print(summary: dict, weights, out: Path) -> None:
    console = Console()
    if weights.random:
        console.print("[bold red]RANDOM WEIGHTS: these numbers say nothing about segmentation quality")
    table = Table(
        "backend",
        "slices",
        "mean Dice",
        "median Dice",
        "set_image ms",
        "predict ms",
        title="box prompts (tight tumour box), per slice; times are medians",
    )
    for name, entry in summary["backends"].items():
        table.add_row(
            name,
            str(entry["slices"]),
            f"{entry['mean_dice']:.3f}",
            f"{entry['median_dice']:.3f}",
            f"{entry['median_set_image_ms']:.0f}",
            f"{entry['median_predict_ms']:.1f}",
        )
    console.print(table)
    names = list(summary["backends"])
    cases = Table("case", *[f"3D Dice {n}" for n in names], title="stacked target slices, per case")
    for case_id, entry in summary["cases"].items():
        cases.add_row(case_id, *[f"{entry[f'dice_3d_{n}']:.3f}" for n in names])
    console.print(cases)
    for name, parity in summary.get("parity", {}).items():
        console.print(
            f"parity {name} vs {parity['vs']}: min mask Dice {parity['min_mask_dice']:.4f}, "
            f"max |Δ predicted IoU| {parity['max_iou_delta']:.2e} over {parity['slices']} slices; "
            f"set_image {parity['set_image_speedup']:.2f}× faster than {parity['vs']}"
        )
    console.print(f"results: {out / 'summary.json'} (per slice: {out / 'slices.jsonl'})")


def _print_protocols(summary: dict, weights, out: Path) -> None:
    console = Console()
    if weights.random:
        console.print("[bold red]RANDOM WEIGHTS: these numbers say nothing about segmentation quality")
    for protocol, entries in summary["protocols"].items():
        # One row per prompt step keeps the table narrow whatever the number of steps.
        names = list(entries)
        table = Table(
            "step",
            *[f"{name} {kind}" for name in names for kind in ("oracle", "suggested")],
            title=f"{protocol}: mean IoU after each prompt step",
            caption=", ".join(
                f"{n}: {e['slices']} slices, best oracle IoU {e['mean_best_iou_oracle']:.3f}"
                for n, e in entries.items()
            ),
        )
        steps = max(len(e["mean_iou_oracle"]) for e in entries.values())
        for step in range(steps):
            cells = []
            for name in names:
                for kind in ("oracle", "suggested"):
                    curve = entries[name][f"mean_iou_{kind}"]
                    cells.append(f"{curve[step]:.3f}" if step < len(curve) else "")
            table.add_row(str(step + 1), *cells)
        console.print(table)
    console.print(f"results: {out / 'summary.json'} (per slice: {out / 'slices.jsonl'})")
