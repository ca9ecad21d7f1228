"""The machine profile `samfast tune` writes: what ran how fast here and whether it passed the gate.

``<cache>/machine-profile.json`` with ``<cache>`` = $SAMFAST_CACHE, else ~/.cache/samfast (the
folder that also holds engines/ outside a source checkout). A profile measured on another CPU
(model or precision flags differ) or by another schema is ignored, so a copied home folder
never picks a configuration this hardware cannot run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SCHEMA = 1
PROFILE_NAME = "machine-profile.json"
# A configuration's cost per slice for ranking: the encoder once plus the clicks of a 9-point
# protocol (points-putz), each click on the cached embedding.
CLICKS_PER_SLICE = 9


def cache_dir() -> Path:
    if os.environ.get("SAMFAST_CACHE"):
        return Path(os.environ["SAMFAST_CACHE"]).expanduser()
    return Path.home() / ".cache" / "samfast"


def profile_path() -> Path:
    return cache_dir() / PROFILE_NAME


def this_machine() -> dict:
    import torch

    from samfast.backends.cpu import PROFILE_FLAGS, cores, cpu_flags, cpu_model

    return {
        "cpu_model": cpu_model(),
        "cpu_flags": sorted(f for f in PROFILE_FLAGS if f in cpu_flags()),
        "cores": cores(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _same_hardware(recorded: dict, current: dict) -> bool:
    return all(recorded.get(k) == current.get(k) for k in ("cpu_model", "cpu_flags", "gpu"))


def load_profile(path: Path | None = None) -> dict | None:
    """This machine's profile, or None (none written, unreadable, other schema or hardware)."""
    path = path or profile_path()
    try:
        profile = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(profile, dict) or profile.get("schema") != SCHEMA:
        return None
    if not _same_hardware(profile.get("machine", {}), this_machine()):
        return None
    return profile


def cost_ms(configuration: dict) -> float:
    return configuration["encoder_ms"] + CLICKS_PER_SLICE * configuration["click_ms"]


def pick(
    profile: dict | None, device: str = "cpu", backend: str | None = None, model: str | None = None
) -> dict | None:
    """The fastest configuration that passed here on ``device`` (and ``backend``, if given) for
    ``model`` (a profile is measured on one model)."""
    if not profile or (model is not None and profile.get("model") != model):
        return None
    if profile.get("random_weights"):
        from samfast.models import get_spec

        if not get_spec(profile["model"]).is_test_config:  # timed on random weights: says nothing
            return None
    passed = [
        c
        for c in profile.get("configurations", [])
        if c.get("passed")
        and c.get("device", "cpu").split(":")[0] == device
        and backend in (None, c["backend"])
    ]
    return min(passed, key=cost_ms, default=None)


def write_profile(profile: dict, path: Path | None = None) -> Path:
    from samfast.io import atomic_write_bytes

    path = path or profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, (json.dumps(profile, indent=2) + "\n").encode())
