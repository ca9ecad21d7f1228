"""`samfast predict`: one slice of a volume (or a 2D image) and a box/points -> a mask file.

The mask keeps the source geometry; a JSON sidecar records model, weights, backend and scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from samfast.cli._common import guarded, open_predictor
from samfast.cli.options import Backend, Checkpoint, Device, Model, Precision, RandomWeights, Target
from samfast.errors import InputError
from samfast.eval.datasets import target_mask
from samfast.eval.metrics import dice
from samfast.io.atomic import check_output_file, check_writable_folder, full_suffix
from samfast.io.volumes import VOLUME_SUFFIXES


def _normalised_slice(image, index: int | None, preset: str) -> np.ndarray:
    from samfast import preprocess
    from samfast.io import get_slice

    plane = get_slice(image, index)
    if preset == "auto":
        preset = "putz" if image.GetDimension() == 3 else "none"
    if preset == "none":
        return plane
    try:
        if preset == "putz":  # the paper scales by the whole volume's maximum, not the slice's
            import SimpleITK as sitk

            scaled = preprocess.normalize_mr_putz(sitk.GetArrayViewFromImage(image))
            return scaled[index] if image.GetDimension() == 3 else scaled
        return preprocess.normalize(plane, preset)
    except ValueError as error:
        raise InputError(str(error)) from None


@guarded
def predict(
    image_path: Annotated[Path, typer.Argument(metavar="IMAGE", help="NIfTI/NRRD/MHA volume or a 2D image.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Mask file to write (.nii.gz, .nrrd, .mha, .png).")
    ],
    box: Annotated[
        tuple[float, float, float, float] | None,
        typer.Option("--box", "-b", metavar="X0 Y0 X1 Y1", help="Box in pixel coordinates of the slice."),
    ] = None,
    points: Annotated[
        list[str] | None,
        typer.Option(
            "--point", "-p", metavar="X,Y,LABEL", help="A click; LABEL 1=foreground 0=background. Repeatable."
        ),
    ] = None,
    slice_index: Annotated[
        int | None, typer.Option("--slice", "-s", help="Axial slice index (3D volumes).")
    ] = None,
    model: Model = "litemedsam",
    backend: Backend = None,
    precision: Precision = "fp32",
    device: Device = "cpu",
    checkpoint: Checkpoint = None,
    random_weights: RandomWeights = False,
    normalize: Annotated[
        str,
        typer.Option(
            "--normalize", help="auto (putz for volumes), putz, medsam-mr, ct-medsam, ct-ren, pet, none."
        ),
    ] = "auto",
    multimask: Annotated[
        bool, typer.Option("--multimask", help="Ask for 3 masks and keep the best-scored one.")
    ] = False,
    label: Annotated[
        Path | None, typer.Option("--label", help="Label volume: print Dice of the mask against it.")
    ] = None,
    target: Target = "tc",
) -> None:
    """Segment one slice from a box and/or clicks and write the mask with the source geometry."""
    from samfast.io import atomic_write_bytes, check_same_grid, get_slice, read_image, write_mask

    if box is None and not points:
        raise InputError("give a prompt: --box X0 Y0 X1 Y1 and/or --point X,Y,LABEL")
    coords, labels = _parse_points(points or [])
    image = read_image(image_path)
    plane = _normalised_slice(image, slice_index, normalize)
    truth = None
    if label is not None:
        label_image = read_image(label)
        check_same_grid(image, label_image, name=str(label))
        truth = target_mask(get_slice(label_image, slice_index), target)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give a mask file name such as mask.nii.gz")
    check_writable_folder(out.parent)
    for path in (out, sidecar_path(out)):
        check_output_file(path)
    if image.GetDimension() == 3 and full_suffix(out).lower() not in VOLUME_SUFFIXES:
        raise InputError(f"{out}: a mask of a volume needs one of {', '.join(VOLUME_SUFFIXES)}")

    echo = lambda m: typer.echo(m, err=True)  # noqa: E731
    predictor = open_predictor(
        model, backend, device, precision, echo, checkpoint=checkpoint, random_weights=random_weights
    )
    predictor.set_image(plane)
    masks, scores, _ = predictor.predict(
        point_coords=coords,
        point_labels=labels,
        box=None if box is None else np.array(box),
        multimask_output=multimask,
    )
    best = int(np.argmax(scores))
    mask = masks[best]
    index = slice_index if image.GetDimension() == 3 else None
    summary = {
        "image": str(image_path),
        "slice": index,
        "box": box,
        "points": points,
        "predicted_iou": float(scores[best]),
        "mask_pixels": int(mask.sum()),
        "normalize": normalize,
        **predictor.describe(),
    }
    if truth is not None:
        summary["dice"] = dice(mask, truth)
    stamp_text = f"samfast {predictor.spec.name} {predictor.weights.label}"
    write_mask(mask.astype(np.uint8), image, out, index=index, description=stamp_text)
    try:  # the provenance sidecar; without it the mask is not kept
        atomic_write_bytes(sidecar_path(out), (json.dumps(summary, indent=2) + "\n").encode())
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    stamp = "" if not predictor.weights.random else "  [RANDOM WEIGHTS: not a real segmentation]"
    line = f"wrote {out} ({summary['mask_pixels']} px, predicted IoU {summary['predicted_iou']:.3f}"
    line += f", Dice vs label {summary['dice']:.3f})" if truth is not None else ")"
    typer.echo(line + stamp)
    if not mask.any():
        typer.echo("warning: the predicted mask is empty", err=True)


def sidecar_path(out: Path) -> Path:
    """mask.nii.gz -> mask.json (the whole format suffix goes, so case.t1/case.t2 stay apart)."""
    suffix = full_suffix(out)
    return out.with_name((out.name[: -len(suffix)] if suffix else out.name) + ".json")


def _parse_points(points: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not points:
        return None, None
    parsed = []
    for text in points:
        parts = text.replace(" ", "").split(",")
        try:
            x, y, lab = float(parts[0]), float(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            raise InputError(f"--point {text!r}: expected X,Y,LABEL such as 120,96,1") from None
        parsed.append((x, y, lab))
    array = np.array(parsed, dtype=np.float32)
    return array[:, :2], array[:, 2]
