"""`samfast eval`: the same protocols and report as `bench brats`, on any image/label pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from samfast.cli import bench as b
from samfast.cli import options as opt
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
    out: opt.Out = Path("runs/eval"),
    model: opt.Model = "litemedsam",
    backend: opt.Backend = None,
    precision: opt.Precision = "fp32",
    compare: opt.Compare = None,
    protocol: opt.Protocol = "box",
    plane: opt.Plane = "axial",
    crop: opt.Crop = False,
    crop_margin_mm: opt.CropMargin = 20.0,
    cases: opt.Cases = None,
    slices_per_case: opt.SlicesPerCase = None,
    seed: opt.Seed = 0,
    target: opt.Target = "nonzero",
    min_area: opt.MinArea = 100,
    normalization: opt.Normalization = "medsam-mr",
    follow: opt.Follow = "oracle",
    feed_logits: opt.FeedLogits = False,
    box_per: opt.BoxPer = "slice",
    nsd_tolerance_mm: opt.ToleranceMm = 1.0,
    checkpoint: opt.Checkpoint = None,
    random_weights: opt.RandomWeights = False,
    device: opt.Device = "cpu",
    fresh: opt.Fresh = False,
    ray: opt.Ray = None,
    workers: opt.Workers = 1,
    cpus_per_worker: opt.CpusPerWorker = None,
    gpus_per_worker: opt.GpusPerWorker = 0.0,
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
