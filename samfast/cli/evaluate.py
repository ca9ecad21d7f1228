"""`samfast eval`: the same protocols and report as `bench brats`, on any image/label pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from samfast.cli import bench as b
from samfast.cli._common import guarded
from samfast.errors import InputError


@guarded
def evaluate(
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder of images (NIfTI/NRRD/MHA or DICOM series folders)."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Folder of labels, matched by name.")
    ] = None,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="CSV with columns image,label[,case,grade].")
    ] = None,
    out: b.Out = Path("runs/eval"),
    model: b.Model = "litemedsam",
    backend: b.Backend = None,
    precision: b.Precision = "fp32",
    compare: b.Compare = None,
    protocol: b.Protocol = "box",
    plane: b.Plane = "axial",
    crop: b.Crop = False,
    crop_margin_mm: b.CropMargin = 20.0,
    cases: b.Cases = None,
    slices_per_case: b.SlicesPerCase = None,
    seed: b.Seed = 0,
    target: b.Target = "nonzero",
    min_area: b.MinArea = 100,
    normalization: b.Normalization = "medsam-mr",
    follow: b.Follow = "oracle",
    feed_logits: b.FeedLogits = False,
    box_per: b.BoxPer = "slice",
    nsd_tolerance_mm: b.ToleranceMm = 1.0,
    checkpoint: b.Checkpoint = None,
    random_weights: b.RandomWeights = False,
    device: b.Device = "cpu",
    fresh: b.Fresh = False,
) -> None:
    """Prompt protocols on generic image/label pairs: --images DIR --labels DIR, or --csv FILE."""
    from samfast.eval.datasets import find_pairs, read_pairs_csv

    options = b.Options(**{k: v for k, v in locals().items() if k in b.Options.__dataclass_fields__})
    if csv is not None:
        found, skipped = read_pairs_csv(csv)
        source = str(csv)
    elif images is not None and labels is not None:
        found, skipped = find_pairs(images, labels)
        source = f"{images} + {labels}"
    else:
        raise InputError("give --images DIR and --labels DIR, or --csv FILE")
    b.run_evaluation(found, skipped, options, source)
