"""The settings of an evaluation run: everything that changes results (config.json, the report)."""

from __future__ import annotations

from dataclasses import dataclass, field

from samfast.errors import InputError
from samfast.eval.protocols import PROTOCOLS

SELECTIONS = ("oracle", "suggested", "previous")


@dataclass
class Settings:
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    planes: list[str] = field(default_factory=lambda: ["axial"])
    target: str = "tc"
    min_area: int = 100  # MedSAM drops targets under 100 px
    crop_margin_mm: float | None = None  # Putz: 20 mm around the 3D target extent
    normalization: str = "putz"
    seed: int = 0
    max_points: int = 9
    max_clicks: int = 5
    follow: str = "oracle"  # mask the next Putz point is placed from
    feed_logits: bool = False
    box_per: str = "slice"  # or "component": one box per connected component
    jitter_px: int = 20
    margin_mm: float = 20.0
    tolerance_mm: float = 1.0  # NSD tolerance
    slices_per_case: int | None = None

    def __post_init__(self) -> None:
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise InputError(f"protocol {unknown[0]!r}: use {', '.join(PROTOCOLS)} or all")
        if self.follow not in ("oracle", "suggested"):
            raise InputError(f"follow {self.follow!r}: use oracle or suggested")
        if self.box_per not in ("slice", "component"):
            raise InputError(f"box per {self.box_per!r}: use slice or component")
