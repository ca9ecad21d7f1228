"""`samfast segment`: a volume (NIfTI/NRRD/MHA or a DICOM series folder) and a 3D box / clicks ->
a mask volume (NIfTI with the source geometry), a DICOM RT Structure Set and a DICOM-SEG, which
--send then C-STOREs to a DICOM node.

Every output is checked before the model runs and written atomically; if one write fails, the
outputs already written by this run are removed, so a failed run leaves no file. A failed send
exits 3 and leaves the written files in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from samfast.cli._common import fail, guarded, open_predictor
from samfast.cli.options import Backend, Checkpoint, Device, Model, Precision, RandomWeights, Target
from samfast.clinical.propagate import PropagationRule
from samfast.errors import InputError
from samfast.io.atomic import check_output_file, check_writable_folder


def _check_outputs(volume, out: Path | None, rtstruct: Path | None, seg: Path | None) -> None:
    from samfast.cli.predict import sidecar_path
    from samfast.clinical.references import check_references
    from samfast.clinical.volume import check_mask_path

    if out is None and rtstruct is None and seg is None:
        raise InputError("nothing to write: give --out, --rtstruct and/or --seg")
    if (rtstruct or seg) and volume.series is None:
        raise InputError(
            "--rtstruct and --seg reference a DICOM series: give a DICOM series folder as VOLUME"
        )
    if rtstruct or seg:  # the frame of reference, study and instances they name
        asked = [name for name, path in (("--rtstruct", rtstruct), ("--seg", seg)) if path is not None]
        check_references(volume.series, " and ".join(asked))
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
        check_writable_folder(folder)
    for path in (out, seg, None if out is None else sidecar_path(out)):
        if path is not None:
            check_output_file(path)


def _write_all(result, volume, out, rtstruct, seg, roi_name, color, description, **dicom) -> list[Path]:
    """Write the outputs asked for; if one fails, remove what this run wrote, the folder it made too."""
    from samfast.clinical.dicom_seg import write_dicom_seg
    from samfast.clinical.rtstruct import write_rtstruct
    from samfast.clinical.volume import write_volume_mask

    made_folder = rtstruct is not None and not rtstruct.exists()
    written: list[Path] = []
    try:
        if out is not None:
            written.append(write_volume_mask(result.mask, volume, out, description))
        if rtstruct is not None:
            written.append(
                write_rtstruct(result.mask, volume.series, rtstruct, roi_name, color, description, **dicom)
            )
        if seg is not None:
            options = {k: v for k, v in dicom.items() if k != "roi_type"}
            written.append(write_dicom_seg(result.mask, volume.series, seg, roi_name, color, **options))
    except BaseException:
        _remove(written, rtstruct if made_folder else None)
        raise
    return written


def _remove(written: list[Path], folder: Path | None) -> None:
    import contextlib

    for path in written:
        path.unlink(missing_ok=True)
    if folder is not None:
        with contextlib.suppress(OSError):
            folder.rmdir()


@guarded
def segment(
    volume_path: Annotated[
        Path,
        typer.Argument(metavar="VOLUME", help="NIfTI/NRRD/MHA volume or a folder holding one DICOM series."),
    ],
    box: Annotated[
        tuple[float, float, float, float, float, float] | None,
        typer.Option(
            "--box",
            "-b",
            metavar="X0 Y0 Z0 X1 Y1 Z1",
            help="3D box: the walk runs from its middle slice to z0, z1.",
        ),
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
            help="JSON file with frame, box (6 numbers), boxes (2D boxes x0,y0,z,x1,y1,z) and points "
            "(x, y, z, label each); see docs.",
        ),
    ] = None,
    frame: Annotated[
        str, typer.Option("--frame", help="Prompt coordinates: voxel (indices) or lps (patient mm).")
    ] = "voxel",
    per_slice: Annotated[
        bool,
        typer.Option(
            "--per-slice",
            help="Segment each prompted slice on its own (a 3D box: the same box on every slice) "
            "instead of the 3D walk.",
        ),
    ] = False,
    propagate: Annotated[
        bool, typer.Option("--propagate", hidden=True, help="The 3D walk; the default, kept for old scripts.")
    ] = False,
    margin_mm: Annotated[
        float, typer.Option("--margin-mm", help="3D walk: box margin around the previous slice's mask.")
    ] = PropagationRule.margin_mm,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Mask volume (.nii.gz, .nrrd, .mha).")
    ] = None,
    rtstruct: Annotated[
        Path | None, typer.Option("--rtstruct", help="Folder for the RT Structure Set.")
    ] = None,
    seg: Annotated[Path | None, typer.Option("--seg", help="DICOM-SEG file to write.")] = None,
    roi_name: Annotated[str, typer.Option("--roi-name", help="ROI / segment name.")] = "SAMFAST",
    roi_type: Annotated[
        str, typer.Option("--roi-type", help="RTROIInterpretedType: GTV, CTV, PTV, ORGAN, AVOIDANCE, ...")
    ] = "GTV",
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty", help="Write the outputs even if the mask is empty (ROI without contours)."
        ),
    ] = False,
    send: Annotated[
        str | None,
        typer.Option("--send", metavar="AE@HOST:PORT", help="C-STORE the RTSTRUCT and SEG to a DICOM node."),
    ] = None,
    send_timeout: Annotated[
        float, typer.Option("--send-timeout", help="Seconds to wait for the DICOM node at each step.")
    ] = 30.0,
    color: Annotated[str, typer.Option("--color", help="ROI colour R,G,B or #rrggbb.")] = "255,0,0",
    model: Model = "litemedsam",
    backend: Backend = None,
    precision: Precision = None,
    device: Device = "cpu",
    checkpoint: Checkpoint = None,
    random_weights: RandomWeights = False,
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
    """Segment a volume from a 3D box, boxes on slices and/or clicks (a 3D walk from the prompted
    slices); write NIfTI, RTSTRUCT and/or DICOM-SEG."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from samfast.cli.predict import sidecar_path
    from samfast.clinical.prompts import build_prompts, parse_point, read_prompts_file
    from samfast.clinical.rtstruct import check_not_empty, check_roi_name, check_roi_type, parse_color
    from samfast.clinical.segment import segment_volume
    from samfast.clinical.send import SendError, parse_node, send_files
    from samfast.clinical.slice_model import SliceModel
    from samfast.clinical.volume import load_volume
    from samfast.eval.datasets import target_mask
    from samfast.eval.metrics import dice
    from samfast.io import atomic_write_bytes, check_same_grid, read_image

    if per_slice and propagate:
        raise InputError("--per-slice and --propagate exclude each other; the 3D walk is the default")
    if not margin_mm >= 0:
        raise InputError(f"--margin-mm {margin_mm:g}: give a margin of 0 mm or more")
    if prompts_file is not None and (box is not None or points):
        raise InputError("give the prompts either on the command line or in --prompts, not both")
    rgb = parse_color(color)
    check_roi_name(roi_name)
    check_roi_type(roi_type)
    node = None if send is None else parse_node(send)
    if not send_timeout > 0:
        raise InputError(f"--send-timeout {send_timeout:g}: give a number of seconds above 0")
    if node is not None and rtstruct is None and seg is None:
        raise InputError("--send sends the RTSTRUCT and SEG: give --rtstruct and/or --seg")
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

    from samfast.runtime.embedding_cache import EmbeddingCache

    console = Console(stderr=True)
    predictor = open_predictor(
        model,
        backend,
        device,
        precision,
        lambda m: console.print(m, markup=False, highlight=False),
        checkpoint=checkpoint,
        random_weights=random_weights,
        cache=EmbeddingCache(),  # one for the walk: its slices are encoded ahead in batches, each once
    )
    slice_model = SliceModel(predictor, volume.normalised(normalize))
    spacing = volume.image.GetSpacing()
    columns = (TextColumn("[bold]segment"), BarColumn(), MofNCompleteColumn())
    # not a terminal (a log, a pipe): no bar, and no stray blank line before an error line
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        known = per_slice or prompts.box3d is not None and prompts.box3d[2] > prompts.box3d[1]
        task = bar.add_task("slices", total=len(prompts.slices) if known else None)
        result = segment_volume(
            slice_model,
            prompts,
            (spacing[1], spacing[0]),
            "per-slice" if per_slice else "3d",
            PropagationRule(margin_mm=margin_mm),
            on_slice=lambda z: bar.advance(task),
        )
    check_not_empty(result.mask, allow_empty)
    stamp = f"samfast {predictor.spec.name} {predictor.weights.label}"
    dicom = {"roi_type": roi_type, "model": predictor.spec.name, "allow_empty": allow_empty}
    made_folder = rtstruct is not None and not rtstruct.exists()
    written = _write_all(result, volume, out, rtstruct, seg, roi_name, rgb, stamp, **dicom)
    summary = {
        "volume": str(volume_path),
        "slices": sorted(result.scores),
        "predicted_iou": {str(z): s for z, s in sorted(result.scores.items())},
        "voxels": int(result.mask.sum()),
        "segmentation": result.summary(),
        "outputs": [str(p) for p in written],
        **predictor.describe(),
    }
    if truth is not None:
        summary["dice_3d"] = dice(result.mask, truth)
    if out is not None:
        try:
            atomic_write_bytes(sidecar_path(out), (json.dumps(summary, indent=2) + "\n").encode())
        except BaseException:
            _remove(written, rtstruct if made_folder else None)
            raise
    line = f"segmented {len(result.scores)} slices, {summary['voxels']} voxels"
    line += f", 3D Dice vs label {summary['dice_3d']:.4f}" if truth is not None else ""
    if result.stops:
        anchors = ", ".join(map(str, result.anchors))
        line += f"; 3D walk from slice {anchors}: " + "; ".join(f"{k}: {v}" for k, v in result.stops.items())
    typer.echo(line + ("  [RANDOM WEIGHTS: not a real segmentation]" if predictor.weights.random else ""))
    for path in written:
        typer.echo(f"wrote {path}")
    if not result.mask.any():
        typer.echo("warning: the mask is empty; the RTSTRUCT lists the ROI without contours", err=True)
    if node is not None:
        dicom_files = [p for p in written if p != out]  # the RTSTRUCT and SEG, whatever their suffix
        try:
            send_files(dicom_files, node, send_timeout)
        except SendError as error:  # exit 3: written here, not delivered there
            raise fail(f"{error}; the files stay written: {', '.join(map(str, dicom_files))}", 3) from None
        typer.echo(f"sent {len(dicom_files)} files to {node}")
