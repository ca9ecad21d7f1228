"""The settings of an evaluation run, defined once: each field's default, its command-line flags and
help text (the shared options of `samfast bench brats` and `samfast eval` are built from them).

``record()`` is the part that changes results: config.json keeps it (a resumed run must match it)
and the report prints it. Fields without a flag are fixed by the papers' protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from samfast.errors import InputError
from samfast.eval.protocols import PROTOCOLS
from samfast.io.planes import PLANES

SELECTIONS = ("oracle", "suggested", "previous")


@dataclass(frozen=True)
class Flag:
    """How a setting reads on the command line: its flags (long first) and help text."""

    names: tuple[str, ...]
    help: str
    choices: tuple[str, ...] = ()  # checked by Settings, listed by the help text itself


def flag(default: Any, *names: str, help: str, choices: tuple[str, ...] = ()) -> Any:
    """A Settings field that is also a command-line option."""
    return field(default=default, metadata={"flag": Flag(names, help, choices)})


def slice_protocols(text: str) -> list[str]:
    """--protocol's per-slice protocols: comma-separated names, or all."""
    if text == "all":
        return list(PROTOCOLS)
    names = [p.strip() for p in text.split(",")]
    unknown = [p for p in names if p not in PROTOCOLS]
    if unknown:
        raise InputError(f"protocol {unknown[0]!r}: use {', '.join(PROTOCOLS)} or all")
    return names


def _either(values) -> str:
    return f"{', '.join(values[:-1])} or {values[-1]}"


@dataclass(frozen=True)
class Settings:
    """Everything a run of `bench brats` or `eval` is given, in the order --help lists it.

    The defaults are bench brats' (BraTS: tumour core, Putz's normalisation); `eval` changes three.
    """

    # -- where results go, the model and where it runs
    out: Path = flag(
        Path("runs/bench-brats"), "--out", "-o", help="Results folder (results.jsonl, summary.*, plots)."
    )
    model: str = flag("litemedsam", "--model", "-m", help="Registry model name.")
    backend: str | None = flag(
        None,
        "--backend",
        help="torch, onnxruntime, openvino, torchscript or tensorrt (default: the fastest configuration "
        "that passed `samfast tune` here, else onnxruntime).",
    )
    precision: str | None = flag(
        "fp32",
        "--precision",
        help="fp32, bf16, fp16, int8 or auto (the fastest configuration `samfast tune` found passing "
        "here). Reduced ones face the accuracy gate; int8 is refused (measured far off fp32).",
    )
    compare: str | None = flag(
        None, "--compare", help="Replay the same prompts on this backend (parity), e.g. torch."
    )
    # -- the prompt protocols and the slices they run on
    protocol: str = flag(
        "box",
        "--protocol",
        help=f"{', '.join(PROTOCOLS)}; comma-separated, or all. bench brats also: volume (a 3D box "
        "per case: the 3D mode, the same box on every slice, the challenge baseline, tight boxes).",
    )
    plane: str = flag(
        "axial",
        "--plane",
        help="axial, coronal, sagittal or tri (all three + vote).",
        choices=(*PLANES, "tri"),
    )
    crop: bool = flag(False, "--crop", help="Crop slices to the 3D target extent + margin (Putz).")
    crop_margin_mm: float = flag(20.0, "--crop-margin-mm", help="Margin of --crop in mm.")
    cases: int | None = flag(None, "--cases", help="Only the first N cases.")
    slices_per_case: int | None = flag(
        None, "--slices-per-case", help="At most N target slices per case and plane, spread evenly."
    )
    seed: int = flag(0, "--seed", help="Seed of every random prompt choice.")
    target: str = flag(
        "tc",
        "--target",
        help="tc (labels 1|4; 1|3 in BraTS 2023), wt, et, nonzero, or label values like 1,4.",
    )
    # MedSAM drops targets under 100 px
    min_area: int = flag(100, "--min-area", help="Slices need this many target pixels.")
    normalization: str = flag("putz", "--normalization", help="putz, medsam-mr, ct-medsam, ct-ren, pet.")
    follow: str = flag(
        "oracle",
        "--follow",
        help="Mask the next Putz point follows: oracle or suggested.",
        choices=("oracle", "suggested"),
    )
    feed_logits: bool = flag(False, "--feed-logits", help="Feed the followed mask's logits back.")
    box_per: str = flag(
        "slice",
        "--box-per",
        help="slice (one tight box) or component (one per region).",
        choices=("slice", "component"),
    )
    nsd_tolerance_mm: float = flag(1.0, "--nsd-tolerance-mm", help="Surface Dice tolerance in mm.")
    checkpoint: Path | None = flag(None, "--checkpoint", help="Official checkpoint (sha256 checked).")
    random_weights: bool = flag(False, "--random-weights", help="Random weights (plumbing only).")
    device: str = flag("cpu", "--device", help="cpu or cuda.")
    fresh: bool = flag(False, "--fresh", help="Discard earlier results in --out.")
    # -- where the cases run
    ray: str | None = flag(
        None,
        "--ray",
        help="Spread cases over Ray: local (a private instance for this command), auto (the running "
        "cluster, RAY_ADDRESS) or an ADDRESS like 10.0.0.5:6379.",
    )
    workers: int = flag(1, "--workers", help="Ray workers (actors), each with its own model.")
    cpus_per_worker: float | None = flag(
        None, "--cpus-per-worker", help="CPUs per Ray worker (default: the cluster's CPUs shared out)."
    )
    gpus_per_worker: float = flag(0.0, "--gpus-per-worker", help="GPUs per Ray worker (e.g. 0.5).")
    # -- fixed by the papers' protocols
    max_points: int = 9
    max_clicks: int = 5
    jitter_px: int = 20
    margin_mm: float = 20.0

    def __post_init__(self) -> None:
        if "volume" in [p.strip() for p in self.protocol.split(",")] and not self.runs_volume:
            raise InputError("--protocol volume runs on its own: give it without other protocols")
        if not self.runs_volume:
            slice_protocols(self.protocol)
        for spec in fields(self):
            choices = spec.metadata["flag"].choices if "flag" in spec.metadata else ()
            value = getattr(self, spec.name)
            if choices and value not in choices:
                raise InputError(f"{spec.name.replace('_', ' ')} {value!r}: use {_either(choices)}")
        from samfast.eval.datasets import target_labels
        from samfast.preprocess import NORMALIZERS

        target_labels(self.target)  # refuses an unknown target before any case is read
        if self.normalization not in NORMALIZERS:
            raise InputError(f"normalization {self.normalization!r}: use one of {', '.join(NORMALIZERS)}")
        if self.ray is None and (
            self.workers != 1 or self.cpus_per_worker is not None or self.gpus_per_worker
        ):
            raise InputError("--workers, --cpus-per-worker and --gpus-per-worker need --ray")

    @property
    def protocols(self) -> list[str]:
        """The per-slice protocols --protocol names ("all": every one)."""
        return slice_protocols(self.protocol)

    @property
    def runs_volume(self) -> bool:
        """--protocol volume (bench brats alone): a 3D box per case instead of per-slice protocols."""
        return [p.strip() for p in self.protocol.split(",")] == ["volume"]

    @property
    def planes(self) -> list[str]:
        return list(PLANES) if self.plane == "tri" else [self.plane]

    @property
    def crop_mm(self) -> float | None:
        """The margin slices are cropped with, or None: full slices."""
        return self.crop_margin_mm if self.crop else None

    def record(self) -> dict:
        """The settings that change results, as config.json and the report keep them."""
        return {
            "protocols": self.protocols,
            "planes": self.planes,
            "target": self.target,
            "min_area": self.min_area,
            "crop_margin_mm": self.crop_mm,
            "normalization": self.normalization,
            "seed": self.seed,
            "max_points": self.max_points,
            "max_clicks": self.max_clicks,
            "follow": self.follow,
            "feed_logits": self.feed_logits,
            "box_per": self.box_per,
            "jitter_px": self.jitter_px,
            "margin_mm": self.margin_mm,
            "tolerance_mm": self.nsd_tolerance_mm,
            "slices_per_case": self.slices_per_case,
        }
