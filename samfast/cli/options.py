"""The command-line options more than one command takes, defined once (Annotated, as huggingface_hub's
CLI does); a command imports the ones it has and keeps only its own options in its module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from samfast.eval.protocols import PROTOCOLS

# -- the model and where it runs (every command that predicts) ---------------------------------
Model = Annotated[str, typer.Option("--model", "-m", help="Registry model name.")]
Backend = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="torch, onnxruntime, openvino, torchscript or tensorrt (default: the fastest configuration "
        "that passed `samfast tune` here, else onnxruntime).",
    ),
]
Precision = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="fp32, bf16, fp16, int8 or auto (the fastest configuration `samfast tune` found passing "
        "here). Reduced ones face the accuracy gate; int8 is refused (measured far off fp32).",
    ),
]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Checkpoint = Annotated[
    Path | None, typer.Option("--checkpoint", help="Official checkpoint (sha256 checked).")
]
RandomWeights = Annotated[bool, typer.Option("--random-weights", help="Random weights (plumbing only).")]
Target = Annotated[
    str,
    typer.Option(
        "--target", help="tc (labels 1|4; 1|3 in BraTS 2023), wt, et, nonzero, or label values like 1,4."
    ),
]

# -- the prompt protocols (`bench brats` and `eval`) ----------------------------------------------
Out = Annotated[Path, typer.Option("--out", "-o", help="Results folder (results.jsonl, summary.*, plots).")]
Compare = Annotated[
    str | None,
    typer.Option("--compare", help="Replay the same prompts on this backend (parity), e.g. torch."),
]
Protocol = Annotated[
    str,
    typer.Option(
        "--protocol",
        help=f"{', '.join(PROTOCOLS)}; comma-separated, or all. bench brats also: volume (a 3D box "
        "per case: the 3D mode, the same box on every slice, the challenge baseline, tight boxes).",
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
Fresh = Annotated[bool, typer.Option("--fresh", help="Discard earlier results in --out.")]

# -- where the cases run (`bench brats` and `eval`) ---------------------------------------------
Ray = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Spread cases over Ray: local (a private instance for this command), auto (the running "
        "cluster, RAY_ADDRESS) or an ADDRESS like 10.0.0.5:6379.",
    ),
]
Workers = Annotated[int, typer.Option("--workers", help="Ray workers (actors), each with its own model.")]
CpusPerWorker = Annotated[
    float | None,
    typer.Option("--cpus-per-worker", help="CPUs per Ray worker (default: the cluster's CPUs shared out)."),
]
GpusPerWorker = Annotated[float, typer.Option("--gpus-per-worker", help="GPUs per Ray worker (e.g. 0.5).")]
