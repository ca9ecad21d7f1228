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
from samfast.errors import InputError
from samfast.eval.protocols import PROTOCOLS

app = typer.Typer(help="Benchmarks: accuracy parity with the reference and latency.", no_args_is_help=True)

# Options shared by `bench brats` and `eval`.
Out = Annotated[Path, typer.Option("--out", "-o", help="Results folder (results.jsonl, summary.*, plots).")]
Model = Annotated[str, typer.Option("--model", "-m", help="Registry model name.")]
Backend = Annotated[str, typer.Option("--backend", help="Backend under test.")]
Compare = Annotated[
    str | None,
    typer.Option("--compare", help="Replay the same prompts on this backend (parity), e.g. torch."),
]
Protocol = Annotated[
    str,
    typer.Option(
        "--protocol",
        help=f"{', '.join(PROTOCOLS)}; comma-separated, or all.",
    ),
]
Plane = Annotated[str, typer.Option("--plane", help="axial, coronal, sagittal or tri (all three + vote).")]
Crop = Annotated[bool, typer.Option("--crop", help="Crop slices to the 3D target extent + margin (Putz).")]
CropMargin = Annotated[float, typer.Option("--crop-margin-mm", help="Margin of --crop in mm.")]
Cases = Annotated[int | None, typer.Option("--cases", help="Only the first N cases.")]
SlicesPerCase = Annotated[
    int | None,
    typer.Option("--slices-per-case", help="At most N target slices per case and plane, spread evenly."),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of every random prompt choice.")]
Target = Annotated[
    str,
    typer.Option(
        "--target", help="tc (labels 1|4; 1|3 in BraTS 2023), wt, et, nonzero, or label values like 1,4."
    ),
]
MinArea = Annotated[int, typer.Option("--min-area", help="Slices need this many target pixels.")]
Normalization = Annotated[
    str, typer.Option("--normalization", help="putz, medsam-mr, ct-medsam, ct-ren, pet.")
]
Follow = Annotated[
    str, typer.Option("--follow", help="Mask the next Putz point follows: oracle or suggested.")
]
FeedLogits = Annotated[bool, typer.Option("--feed-logits", help="Feed the followed mask's logits back.")]
BoxPer = Annotated[
    str, typer.Option("--box-per", help="slice (one tight box) or component (one per region).")
]
ToleranceMm = Annotated[float, typer.Option("--nsd-tolerance-mm", help="Surface Dice tolerance in mm.")]
Checkpoint = Annotated[
    Path | None, typer.Option("--checkpoint", help="Official checkpoint (sha256 checked).")
]
RandomWeights = Annotated[bool, typer.Option("--random-weights", help="Random weights (plumbing only).")]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Fresh = Annotated[bool, typer.Option("--fresh", help="Discard earlier results in --out.")]


@dataclass
class Options:
    out: Path
    model: str
    backend: str
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
    from samfast import Predictor
    from samfast.eval import records
    from samfast.eval.report import write_report
    from samfast.eval.run import Evaluation
    from samfast.eval.summary import summarise
    from samfast.models import get_spec

    settings = _settings(options)
    if options.cases is not None:
        cases = cases[: options.cases]
    if not cases:
        raise InputError(f"{data}: no usable case ({len(skipped)} skipped: {skipped[0].reason})")
    console = Console(stderr=True)
    spec = get_spec(options.model)

    def build(backend: str) -> Predictor:
        return Predictor(
            spec.name,
            backend=backend,
            device=options.device,
            checkpoint=options.checkpoint,
            random_weights=options.random_weights,
            log=lambda m: console.print(m, markup=False, highlight=False),
        )

    primary = build(options.backend)
    compare = build(options.compare) if options.compare and options.compare != options.backend else None
    config = {
        "data": data,
        "model": spec.name,
        "weights": primary.weights.label,
        "backend": options.backend,
        "compare": options.compare if compare else None,
        "device": options.device,
        "cases": [c.case_id for c in cases],
    }

    def progress(items, total, label):
        columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            yield from bar.track(items, total=total)

    evaluation = Evaluation(
        (options.backend, primary),
        (options.compare, compare) if compare else None,
        settings,
        options.out,
        progress,
        log=lambda m: console.print(m, markup=False, highlight=False),
    )
    rows = evaluation.run(cases, skipped, config, options.fresh)
    timings = records.read_rows(options.out / records.TIMINGS)
    summary = summarise(rows, timings, {**config, "settings": asdict(settings)}, evaluation.wall_s)
    records.atomic_write_bytes(options.out / records.SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    written = write_report(options.out, summary, rows, primary.weights.random)
    _print(summary, primary.weights.random)
    console.print(f"report: {written[0]}; rows: {options.out / records.RESULTS}", highlight=False)
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
    backend: Backend = "onnxruntime",
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
) -> None:
    """The papers' prompt protocols on BraTS cases: accuracy, 3D metrics, parity and latency."""
    from samfast.eval.datasets import find_brats_cases
    from samfast.io import find_demo_data

    options = Options(**{k: v for k, v in locals().items() if k in Options.__dataclass_fields__})
    root = data or find_demo_data()
    found, skipped = find_brats_cases(root, modality)
    run_evaluation(found, skipped, options, str(root))
