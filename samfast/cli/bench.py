"""`samfast bench brats` and the shared machinery of `samfast eval`: the papers' prompt protocols.

Resumable: rerunning with the same --out continues where an interrupted run stopped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from samfast.cli._common import guarded
from samfast.cli.options import (
    Backend,
    BoxPer,
    Cases,
    Checkpoint,
    Compare,
    CpusPerWorker,
    Crop,
    CropMargin,
    Device,
    FeedLogits,
    Follow,
    Fresh,
    GpusPerWorker,
    MinArea,
    Model,
    Normalization,
    Out,
    Plane,
    Precision,
    Protocol,
    RandomWeights,
    Ray,
    Seed,
    SlicesPerCase,
    Target,
    ToleranceMm,
    Workers,
)
from samfast.errors import InputError
from samfast.eval.protocols import PROTOCOLS

app = typer.Typer(help="Benchmarks: accuracy parity with the reference and latency.", no_args_is_help=True)


@dataclass
class Options:
    out: Path
    model: str
    backend: str | None
    precision: str
    compare: str | None
    protocol: str
    plane: str
    crop: bool
    crop_margin_mm: float
    cases: int | None
    slices_per_case: int | None
    seed: int
    target: str
    min_area: int
    normalization: str
    follow: str
    feed_logits: bool
    box_per: str
    nsd_tolerance_mm: float
    checkpoint: Path | None
    random_weights: bool
    device: str
    fresh: bool
    ray: str | None = None
    workers: int = 1
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0


def _settings(o: Options):
    from samfast.eval.datasets import target_labels
    from samfast.eval.settings import Settings
    from samfast.eval.slicing import PLANES
    from samfast.preprocess import NORMALIZERS

    protocols = list(PROTOCOLS) if o.protocol == "all" else [p.strip() for p in o.protocol.split(",")]
    if o.plane not in (*PLANES, "tri"):
        raise InputError(f"plane {o.plane!r}: use axial, coronal, sagittal or tri")
    target_labels(o.target)  # refuse an unknown target before any case is read
    if o.normalization not in NORMALIZERS:
        raise InputError(f"normalization {o.normalization!r}: use one of {', '.join(NORMALIZERS)}")
    return Settings(
        protocols=protocols,
        planes=list(PLANES) if o.plane == "tri" else [o.plane],
        target=o.target,
        min_area=o.min_area,
        crop_margin_mm=o.crop_margin_mm if o.crop else None,
        normalization=o.normalization,
        seed=o.seed,
        follow=o.follow,
        feed_logits=o.feed_logits,
        box_per=o.box_per,
        tolerance_mm=o.nsd_tolerance_mm,
        slices_per_case=o.slices_per_case,
    )


def run_evaluation(cases: list, skipped: list, options: Options, data: str) -> None:
    """Everything after finding the cases: predictors, the run, summary, report, console tables."""
    from functools import partial

    from samfast import Predictor
    from samfast.artifacts.layout import default_engine_dir
    from samfast.cli import _cluster
    from samfast.eval import records
    from samfast.eval.report import write_report
    from samfast.eval.run import Evaluation
    from samfast.eval.summary import summarise
    from samfast.models import get_spec

    settings = _settings(options)
    records.make_out_dir(options.out)  # before any model is loaded: a bad --out costs nothing
    if options.cases is not None:
        cases = cases[: options.cases]
    if not cases:
        raise InputError(f"{data}: no usable case ({len(skipped)} skipped: {skipped[0].reason})")
    console = Console(stderr=True)
    spec = get_spec(options.model)

    # picklable: each Ray worker builds its own predictor from it
    def recipe(backend: str | None, precision: str | None = "fp32") -> partial:
        return partial(
            Predictor,
            spec.name,
            backend=backend,
            device=options.device,
            precision=precision,
            checkpoint=options.checkpoint,
            random_weights=options.random_weights,
            engine_dir=default_engine_dir(),
        )

    def build(backend: str | None, precision: str | None = "fp32") -> Predictor:
        return recipe(backend, precision)(log=lambda m: console.print(m, markup=False, highlight=False))

    primary = build(options.backend, options.precision)
    backend, precision = primary.choice.backend, primary.choice.precision
    # The compare backend is the fp32 reference, so a reduced precision compares even on its backend.
    same = options.compare == backend and precision == "fp32"
    compare = build(options.compare) if options.compare and not same else None
    config = {
        "data": data,
        "model": spec.name,
        "weights": primary.weights.label,
        "backend": backend,
        "precision": precision,
        "compare": options.compare if compare else None,
        "device": options.device,
        "cases": [c.case_id for c in cases],
    }

    def progress(items, total, label):
        columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            yield from bar.track(items, total=total)

    evaluation = Evaluation(
        (backend, primary),
        (options.compare, compare) if compare else None,
        settings,
        options.out,
        progress,
        log=lambda m: console.print(m, markup=False, highlight=False),
    )
    with _cluster.executor(
        options, recipe(backend, precision), recipe(options.compare) if compare else None, console
    ) as executor:
        rows = evaluation.run(cases, skipped, config, options.fresh, executor=executor)
        ran_on = _cluster.record(executor)
    timings = records.read_rows(options.out / records.TIMINGS)
    summary = summarise(rows, timings, {**config, "settings": asdict(settings)}, evaluation.wall_s, ran_on)
    records.atomic_write_bytes(options.out / records.SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    written = write_report(options.out, summary, rows, primary.weights.random)
    _print(summary, primary.weights.random)
    console.print(f"report: {written[0]}; rows: {options.out / records.RESULTS}", highlight=False)
    if precision != "fp32":
        # A reduced precision is judged by task accuracy (the gate), not by the strict fp32 rows.
        gate = summary.get("precision_gate") or {}
        failed = [p for p, v in gate.get("protocols", {}).items() if not v["passed"]]
        if gate and failed:
            typer.echo(f"error: {precision} failed the accuracy gate for {', '.join(failed)}", err=True)
            raise typer.Exit(1)
        return
    from samfast.eval.parity import RUN_PARITY

    failed = [protocol for protocol, p in summary["parity"].items() if RUN_PARITY.failed(p)]
    if failed:
        typer.echo(f"error: parity with {options.compare} failed for {', '.join(failed)}", err=True)
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
def brats(
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="BraTS 2020/2021/2023 folder (default: shipped demo).")
    ] = None,
    modality: Annotated[
        str, typer.Option("--modality", help="Sequence: t1ce (default), t1, t2, flair.")
    ] = "t1ce",
    out: Out = Path("runs/bench-brats"),
    model: Model = "litemedsam",
    backend: Backend = None,
    precision: Precision = "fp32",
    compare: Compare = None,
    protocol: Protocol = "box",
    plane: Plane = "axial",
    crop: Crop = False,
    crop_margin_mm: CropMargin = 20.0,
    cases: Cases = None,
    slices_per_case: SlicesPerCase = None,
    seed: Seed = 0,
    target: Target = "tc",
    min_area: MinArea = 100,
    normalization: Normalization = "putz",
    follow: Follow = "oracle",
    feed_logits: FeedLogits = False,
    box_per: BoxPer = "slice",
    nsd_tolerance_mm: ToleranceMm = 1.0,
    checkpoint: Checkpoint = None,
    random_weights: RandomWeights = False,
    device: Device = "cpu",
    fresh: Fresh = False,
    ray: Ray = None,
    workers: Workers = 1,
    cpus_per_worker: CpusPerWorker = None,
    gpus_per_worker: GpusPerWorker = 0.0,
) -> None:
    """The papers' prompt protocols on BraTS cases: accuracy, 3D metrics, parity and latency."""
    from samfast.eval.datasets import find_brats_cases
    from samfast.io import find_demo_data

    options = Options(**{k: v for k, v in locals().items() if k in Options.__dataclass_fields__})
    root = data or find_demo_data()
    found, skipped = find_brats_cases(root, modality)
    if "volume" in [p.strip() for p in protocol.split(",")]:
        if protocol.strip() != "volume":
            raise InputError("--protocol volume runs on its own: give it without other protocols")
        run_volume(found, skipped, options)
        return
    run_evaluation(found, skipped, options, str(root))


def run_volume(cases: list, skipped: list, options: Options) -> None:
    """--protocol volume: each case's 3D box, segmented four ways (samfast.clinical.volume_bench)."""
    import sys

    from samfast import Predictor
    from samfast.clinical.volume_bench import MODES, run_volume_bench
    from samfast.eval import records
    from samfast.eval.datasets import target_labels
    from samfast.preprocess import NORMALIZERS

    console = Console() if sys.stdout.isatty() else Console(width=150)
    target_labels(options.target)
    if options.normalization not in NORMALIZERS:
        raise InputError(f"normalization {options.normalization!r}: use one of {', '.join(NORMALIZERS)}")
    records.make_out_dir(options.out)
    if options.fresh:
        (options.out / "volume.jsonl").unlink(missing_ok=True)
    cases = cases[: options.cases] if options.cases is not None else cases
    if not cases:
        raise InputError("no usable cases: " + "; ".join(f"{s.case_id}: {s.reason}" for s in skipped))
    predictor = Predictor(
        options.model,
        backend=options.backend,
        device=options.device,
        precision=options.precision,
        checkpoint=options.checkpoint,
        random_weights=options.random_weights,
        log=lambda m: console.print(m, markup=False, highlight=False),
    )
    summary = run_volume_bench(
        cases,
        predictor,
        options.out,
        options.normalization,
        options.target,
        options.nsd_tolerance_mm,
        progress=lambda case: console.print(f"volume: {case}", markup=False, highlight=False),
    )
    table = Table(title=f"3D from the target's 3D box ({options.target}): 3D Dice (voxels / target's)")
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
    console.print(f"wrote {options.out / 'volume.json'}", markup=False, highlight=False)
