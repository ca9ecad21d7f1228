"""`samfast bench brats`, and how `samfast eval` shows a run: the papers' prompt protocols.

The run itself is samfast.eval.orchestrate; its options are samfast.eval.settings.Settings.
Resumable: rerunning with the same --out continues where an interrupted run stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from samfast.cli import _cluster
from samfast.cli._common import guarded, machine_profile
from samfast.cli.options import with_settings
from samfast.errors import InputError
from samfast.eval.settings import Settings

app = typer.Typer(help="Benchmarks: accuracy parity with the reference and latency.", no_args_is_help=True)


def run_evaluation(cases: list, skipped: list, settings: Settings, data: str) -> None:
    """The per-slice protocols on found cases (samfast.eval.orchestrate), shown on the console."""
    from samfast.eval import records
    from samfast.eval.orchestrate import evaluate

    console = Console(stderr=True)

    def progress(items, total, label):
        columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            yield from bar.track(items, total=total)

    outcome = evaluate(
        cases,
        skipped,
        settings,
        data,
        log=lambda m: console.print(m, markup=False, highlight=False),
        progress=progress,
        cluster=lambda primary, compare: _cluster.executor(settings, primary, compare, console),
        profile=machine_profile(settings.backend, settings.precision),
    )
    _print(outcome.summary, outcome.random_weights)
    console.print(f"report: {outcome.report}; rows: {settings.out / records.RESULTS}", highlight=False)
    if outcome.failure:
        typer.echo(f"error: {outcome.failure}", err=True)
        raise typer.Exit(1)


def _print(summary: dict, random_weights: bool) -> None:
    import sys

    # Piped or logged output gets the full table instead of 80 truncated columns.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    if random_weights:
        console.print("[bold red]RANDOM WEIGHTS: these numbers say nothing about segmentation quality")
    table = Table(
        "protocol", "plane", "slices", "oracle", "suggested", "previous", "DSC", "NSD", "HD95 mm", "3D DSC",
        title="best IoU per slice (mean); DSC/NSD/HD95 of the oracle mask; 3D DSC of stacked oracle masks",
    )  # fmt: skip
    for protocol, planes in summary["protocols"].items():
        for plane, entry in planes.items():
            sel = entry["selections"]
            volume = summary["volumes"].get(protocol, {}).get(plane, {}).get("oracle", {})
            cells = [sel[n]["iou"].get("mean") for n in ("oracle", "suggested", "previous")]
            cells += [sel["oracle"][m].get("mean") for m in ("dice", "nsd", "hd95")]
            cells.append(volume.get("dice", {}).get("mean"))
            table.add_row(
                protocol, plane, str(entry["slices"]), *("–" if c is None else f"{c:.3f}" for c in cells)
            )
    console.print(table)
    for protocol, planes in summary["volumes"].items():
        if "tri" in planes:
            console.print(
                f"{protocol}: tri-planar vote 3D DSC {planes['tri']['oracle']['dice'].get('mean', 0):.3f}"
            )
    from samfast.eval.parity import RUN_PARITY

    for protocol, p in summary["parity"].items():
        console.print(
            f"parity {protocol} vs {p['backend']}: Δ mean IoU {p['delta_mean_iou']:.4f}, min mask Dice "
            f"{p['min_mask_dice']:.4f}, {100 * p[RUN_PARITY.fraction_key]:.1f}% of "
            f"{p['slices']} slices ≥ {RUN_PARITY.mask_dice:g}"
        )
    gate = summary.get("precision_gate") or {}
    for protocol, v in gate.get("protocols", {}).items():
        console.print(
            f"gate {protocol}: Δ mean DSC {v['delta_mean_dice']:+.4f}, Δ mean best IoU "
            f"{v['delta_mean_best_iou']:+.4f} vs fp32; {100 * v['agreement_dice']['share_ge_0.95']:.1f}% "
            f"of masks Dice ≥ 0.95 with fp32 -> {'pass' if v['passed'] else 'FAIL'}"
        )
    latency = summary["latency"]
    if latency.get("slices"):
        line = f"encoder {latency['encoder_ms_per_slice']['median']:.0f} ms/slice"
        if "encoder_speedup_vs_compare" in latency:
            line += f" ({latency['encoder_speedup_vs_compare']:.2f}× the compare backend)"
        console.print(
            f"{line}; {latency['slices_per_s']:.2f} slices/s; peak RSS {latency['peak_rss_mb']:.0f} MB"
        )
    for skip in summary["cases"]["skipped"]:
        console.print(f"skipped {skip['case']}: {skip['reason']}", highlight=False, markup=False)


@app.command("brats")
@guarded
@with_settings()
def brats(
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="BraTS 2020/2021/2023 folder (default: shipped demo).")
    ] = None,
    modality: Annotated[
        str, typer.Option("--modality", help="Sequence: t1ce (default), t1, t2, flair.")
    ] = "t1ce",
    *,
    settings: Settings,
) -> None:
    """The papers' prompt protocols on BraTS cases: accuracy, 3D metrics, parity and latency."""
    from samfast.eval.datasets import find_brats_cases
    from samfast.io import find_demo_data

    root = data or find_demo_data()
    found, skipped = find_brats_cases(root, modality)
    if settings.runs_volume:
        run_volume(found, skipped, settings)
        return
    run_evaluation(found, skipped, settings, str(root))


def run_volume(cases: list, skipped: list, settings: Settings) -> None:
    """--protocol volume: each case's 3D box, segmented four ways (samfast.clinical.volume_bench)."""
    import sys

    from samfast import Predictor
    from samfast.clinical.volume_bench import MODES, run_volume_bench
    from samfast.eval import records

    console = Console() if sys.stdout.isatty() else Console(width=150)
    records.make_out_dir(settings.out)
    if settings.fresh:
        (settings.out / "volume.jsonl").unlink(missing_ok=True)
    cases = cases[: settings.cases] if settings.cases is not None else cases
    if not cases:
        raise InputError("no usable cases: " + "; ".join(f"{s.case_id}: {s.reason}" for s in skipped))
    predictor = Predictor(
        settings.model,
        backend=settings.backend,
        device=settings.device,
        precision=settings.precision,
        checkpoint=settings.checkpoint,
        random_weights=settings.random_weights,
        log=lambda m: console.print(m, markup=False, highlight=False),
        profile=machine_profile(settings.backend, settings.precision),
    )
    summary = run_volume_bench(
        cases,
        predictor,
        settings.out,
        settings.normalization,
        settings.target,
        settings.nsd_tolerance_mm,
        progress=lambda case: console.print(f"volume: {case}", markup=False, highlight=False),
    )
    table = Table(title=f"3D from the target's 3D box ({settings.target}): 3D Dice (voxels / target's)")
    table.add_column("case")
    for mode in MODES:
        table.add_column(mode, justify="right")
    for case, row in summary["cases"].items():
        cells = [f"{row[m]['dice']:.3f} ({row[m]['voxel_ratio']:.2f})" for m in MODES]
        table.add_row(f"{case} ({row['slices']} slices)", *cells)
    goals = summary["goals"]
    table.add_row("mean", *(f"{goals['mean_dice'][m]:.3f}" for m in MODES))
    console.print(table)
    console.print(
        f"3d vs baseline: {goals['gain_over_baseline']:+.4f}; gap to tight closed {goals['gap_closed']}; "
        f"worst case vs baseline {goals['worst_vs_baseline']:+.4f}; mean voxel ratio "
        f"{goals['mean_voxel_ratio']:.3f}  [{predictor.describe().get('backend')}]",
        markup=False,
        highlight=False,
    )
    console.print(f"wrote {settings.out / 'volume.json'}", markup=False, highlight=False)
