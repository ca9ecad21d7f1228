"""Writing one exported set (a format at a precision) atomically, with its manifest and parity.

Files go to a temporary sibling folder, are verified there, and only then renamed into place.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from samfast.artifacts.layout import expected_manifest_fields
from samfast.artifacts.manifest import file_entries, software_versions, utc_now, write_manifest
from samfast.errors import InputError, SamfastError
from samfast.io.atomic import publish_permissions


class ParityFailure(SamfastError):
    """The artifact disagrees with the PyTorch fp32 reference beyond the tolerance table."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


def build_set(
    target: Path,
    spec,
    weights,
    fmt: str,
    precision: str,
    opset: int | None,
    writer: Callable[[Path], dict],
    verify: Callable[[Path], dict] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run ``writer(tmp)`` (returns manifest entries), hash the files, run ``verify(tmp)`` (returns
    a parity summary with "passed"), write manifest.json and rename the folder onto ``target``."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as error:
        raise InputError(f"{target.parent}: cannot write there ({error.strerror or error})") from None
    started = time.perf_counter()
    try:
        fragment = writer(tmp)
        names = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = expected_manifest_fields(spec.name, weights, opset, precision, fmt) | {
            "created": utc_now(),
            "checkpoint_path": weights.path,
            "versions": software_versions(),
            "input_size": spec.input_size,
            "embedding_shape": list(spec.embedding_shape),
            "low_res_size": spec.low_res_size,
            "normalization": spec.normalization,
            **fragment,
            "files": file_entries(tmp, names),
        }
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        if verify is not None:
            write_manifest(tmp, manifest)  # backends read it (e.g. TensorRT's GPU identity)
            manifest["parity"] = verify(tmp)
            if not manifest["parity"]["passed"]:
                raise ParityFailure(_failure_line(fmt, precision, manifest["parity"]), manifest["parity"])
        write_manifest(tmp, manifest)
        publish_permissions(tmp)
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {target} in {manifest['export_seconds']} s")
    return manifest


def _failure_line(fmt: str, precision: str, report: dict) -> str:
    worst = {k: v["max_abs"] for k, v in report.get("outputs", {}).items()}
    return (
        f"{fmt} {precision} parity check failed: min mask Dice {report.get('min_mask_dice')}, "
        f"max |Δ IoU| {report.get('max_iou_delta')}, max abs error per output {worst}; nothing written"
    )


def replace_folder(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
