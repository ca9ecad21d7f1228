"""`samfast eval`: the same protocols and report as `bench brats`, on any image/label pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from samfast.cli._common import guarded
from samfast.cli.bench import run_evaluation
from samfast.cli.options import with_settings
from samfast.errors import InputError
from samfast.eval.settings import Settings


@guarded
@with_settings(out=Path("runs/eval"), target="nonzero", normalization="medsam-mr")
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
    *,
    settings: Settings,
) -> None:
    """Prompt protocols on generic image/label pairs: --images DIR --labels DIR, or --csv FILE."""
    from samfast.eval.datasets import find_pairs, read_pairs_csv

    if csv is not None:
        found, skipped = read_pairs_csv(csv)
        source = str(csv)
    elif images is not None and labels is not None:
        found, skipped = find_pairs(images, labels)
        source = f"{images} + {labels}"
    else:
        raise InputError("give --images DIR and --labels DIR, or --csv FILE")
    run_evaluation(found, skipped, settings, source)
