"""`samfast segment`: a volume (NIfTI/NRRD/MHA or a DICOM series folder) and a 3D box / clicks ->
a mask volume (NIfTI with the source geometry), a DICOM RT Structure Set and a DICOM-SEG.

Every output is checked before the model runs and written atomically; if one write fails, the
outputs already written by this run are removed, so a failed run leaves no file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from samfast.cli._common import guarded
from samfast.cli.bench import Precision, Target
from samfast.errors import InputError

# Options shared with `samfast serve`.
Model = Annotated[str, typer.Option("--model", "-m", help="Registry model name.")]
Backend = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="torch, onnxruntime or openvino (default: the fastest that passed `samfast tune` here, "
        "else onnxruntime).",
    ),
]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]


def _check_outputs(volume, out: Path | None, rtstruct: Path | None, seg: Path | None) -> None:
    from samfast.clinical.volume import check_mask_path

    if out is None and rtstruct is None and seg is None:
        raise InputError("nothing to write: give --out, --rtstruct and/or --seg")
    if (rtstruct or seg) and volume.series is None:
        raise InputError(
            "--rtstruct and --seg reference a DICOM series: give a DICOM series folder as VOLUME"
        )
    if out is not None:
        check_mask_path(out)
    if seg is not None and (seg.is_dir() or not seg.parent.is_dir()):
        raise InputError(f"{seg}: give a file name in an existing folder for --seg")
    if rtstruct is not None and (rtstruct.is_file() or not (rtstruct.is_dir() or rtstruct.parent.is_dir())):
        raise InputError(f"{rtstruct}: --rtstruct needs a folder (made if its parent exists)")
    folders = [p.parent for p in (out, seg) if p is not None]
    if rtstruct is not None:
        folders.append(rtstruct if rtstruct.is_dir() else rtstruct.parent)
    for folder in folders:
        _check_writable(folder)


def _check_writable(folder: Path) -> None:
    """Create and remove a file there: permission bits alone do not tell root or read-only mounts."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputError(f"{folder}: output folder is not writable ({error.strerror})") from None


def _write_all(result, volume, out, rtstruct, seg, roi_name, color, description) -> list[Path]:
    from samfast.clinical.dicom_seg import write_dicom_seg
    from samfast.clinical.rtstruct import write_rtstruct
    from samfast.clinical.volume import write_volume_mask

    written: list[Path] = []
    try:
        if out is not None:
            written.append(write_volume_mask(result.mask, volume, out, description))
        if rtstruct is not None:
            written.append(write_rtstruct(result.mask, volume.series, rtstruct, roi_name, color, description))
        if seg is not None:
            written.append(write_dicom_seg(result.mask, volume.series, seg, roi_name, color))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


@guarded
def segment(
    volume_path: Annotated[
        Path,
        typer.Argument(metavar="VOLUME", help="NIfTI/NRRD/MHA volume or a folder holding one DICOM series."),
    ],
    box: Annotated[
        tuple[float, float, float, float, float, float] | None,
        typer.Option("--box", "-b", metavar="X0 Y0 Z0 X1 Y1 Z1", help="3D box: one box per slice z0..z1."),
    ] = None,
    points: Annotated[
        list[str] | None,
        typer.Option(
            "--points", "--point", "-p", metavar="X,Y,Z,LABEL", help="A click (1 fg, 0 bg). Repeatable."
        ),
    ] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="JSON file with frame, box (6 numbers) and points (x, y, z, label each); see docs.",
        ),
    ] = None,
    frame: Annotated[
        str, typer.Option("--frame", help="Prompt coordinates: voxel (indices) or lps (patient mm).")
    ] = "voxel",
    propagate: Annotated[
        bool, typer.Option("--propagate", help="Start from one prompted slice and walk to the neighbours.")
    ] = False,
    margin_mm: Annotated[
        float, typer.Option("--margin-mm", help="Propagation: box margin around a mask.")
    ] = 6.0,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Mask volume (.nii.gz, .nrrd, .mha).")
    ] = None,
    rtstruct: Annotated[
        Path | None, typer.Option("--rtstruct", help="Folder for the RT Structure Set.")
    ] = None,
    seg: Annotated[Path | None, typer.Option("--seg", help="DICOM-SEG file to write.")] = None,
    roi_name: Annotated[str, typer.Option("--roi-name", help="ROI / segment name.")] = "SAMFAST",
    color: Annotated[str, typer.Option("--color", help="ROI colour R,G,B or #rrggbb.")] = "255,0,0",
    model: Model = "litemedsam",
    backend: Backend = None,
    precision: Precision = None,
    device: Device = "cpu",
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Official checkpoint file.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Plumbing tests only.")] = False,
    normalize: Annotated[
        str,
        typer.Option(
            "--normalize", help="auto (CT window for CT, else putz), putz, medsam-mr, ct-..., none."
        ),
    ] = "auto",
    label: Annotated[
        Path | None, typer.Option("--label", help="Label volume: print 3D Dice against it.")
    ] = None,
    target: Target = "tc",
) -> None:
    """Segment a volume from a 3D box and/or clicks; write NIfTI, RTSTRUCT and/or DICOM-SEG."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from samfast import Predictor
    from samfast.cli.predict import sidecar_path
    from samfast.clinical.prompts import build_prompts, parse_point, read_prompts_file
    from samfast.clinical.propagate import PropagationRule
    from samfast.clinical.rtstruct import check_roi_name, parse_color
    from samfast.clinical.segment import segment_volume
    from samfast.clinical.slice_model import SliceModel
    from samfast.clinical.volume import load_volume
    from samfast.eval.datasets import target_mask
    from samfast.eval.metrics import dice
    from samfast.io import atomic_write_bytes, check_same_grid, read_image

    if prompts_file is not None and (box is not None or points):
        raise InputError("give the prompts either on the command line or in --prompts, not both")
    rgb = parse_color(color)
    check_roi_name(roi_name)
    volume = load_volume(volume_path)
    _check_outputs(volume, out, rtstruct, seg)
    if prompts_file is not None:
        prompts = read_prompts_file(prompts_file, volume.image)
    else:
        parsed = [parse_point(p) for p in points or []]
        prompts = build_prompts(volume.image, None if box is None else list(box), parsed, frame)
    truth = None
    if label is not None:
        label_image = read_image(label)
        check_same_grid(volume.image, label_image, name=str(label))
        import SimpleITK as sitk

        truth = target_mask(sitk.GetArrayViewFromImage(label_image), target)

    console = Console(stderr=True)
    predictor = Predictor(
        model,
        backend=backend,
        device=device,
        precision=precision,
        checkpoint=checkpoint,
        random_weights=random_weights,
        log=lambda m: console.print(m, markup=False, highlight=False),
    )
    slice_model = SliceModel(predictor, volume.normalised(normalize))
    spacing = volume.image.GetSpacing()
    columns = (TextColumn("[bold]segment"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("slices", total=None if propagate else len(prompts.slices))
        result = segment_volume(
            slice_model,
            prompts,
            (spacing[1], spacing[0]),
            propagate,
            PropagationRule(margin_mm=margin_mm),
            on_slice=lambda z: bar.advance(task),
        )
    stamp = f"samfast {predictor.spec.name} {predictor.weights.label}"
    written = _write_all(result, volume, out, rtstruct, seg, roi_name, rgb, stamp)
    summary = {
        "volume": str(volume_path),
        "slices": sorted(result.scores),
        "predicted_iou": {str(z): s for z, s in sorted(result.scores.items())},
        "voxels": int(result.mask.sum()),
        "propagation": None
        if result.start_slice is None
        else {"start": result.start_slice, "stops": result.stops},
        "outputs": [str(p) for p in written],
        **predictor.describe(),
    }
    if truth is not None:
        summary["dice_3d"] = dice(result.mask, truth)
    if out is not None:
        try:
            atomic_write_bytes(sidecar_path(out), (json.dumps(summary, indent=2) + "\n").encode())
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
    line = f"segmented {len(result.scores)} slices, {summary['voxels']} voxels"
    line += f", 3D Dice vs label {summary['dice_3d']:.4f}" if truth is not None else ""
    if result.stops:
        line += f"; propagation from slice {result.start_slice}: " + "; ".join(
            f"{k}: {v}" for k, v in result.stops.items()
        )
    typer.echo(line + ("  [RANDOM WEIGHTS: not a real segmentation]" if predictor.weights.random else ""))
    for path in written:
        typer.echo(f"wrote {path}")
    if not result.mask.any():
        typer.echo("warning: the mask is empty", err=True)
