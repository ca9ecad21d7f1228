"""manifest.json: what an exported set holds, which weights and software made it, file hashes.

A cache is reused only while its manifest matches what is asked for and every file hash checks out.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from samfast import __version__
from samfast.io.atomic import atomic_write_bytes
from samfast.models.checkpoints import sha256_file

MANIFEST_NAME = "manifest.json"


def dist_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"samfast": __version__, "python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "segment-anything", "tensorrt"):
        versions[dist] = dist_version(dist)
    return versions


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def file_entries(folder: Path, names: list[str]) -> dict[str, dict]:
    return {
        name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
        for name in names
    }


def write_manifest(folder: Path, manifest: dict) -> Path:
    path = Path(folder) / MANIFEST_NAME
    atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_manifest(folder: Path) -> dict | None:
    """The manifest, or None when absent or unreadable (a cache then counts as missing)."""
    try:
        return json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def mismatch_reason(folder: Path, expected: dict) -> str | None:
    """Why the cached set in ``folder`` cannot be used for ``expected``; None when it can."""
    manifest = read_manifest(folder)
    if manifest is None:
        return "no manifest yet"
    for key, value in expected.items():
        if manifest.get(key) != value:
            return f"manifest {key} is {manifest.get(key)!r}, need {value!r}"
    for name, entry in manifest.get("files", {}).items():
        path = Path(folder) / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            return f"{name} does not match its sha256 in the manifest"
    if not manifest.get("files"):
        return "manifest lists no files"
    return None
