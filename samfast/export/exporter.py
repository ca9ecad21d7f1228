"""`samfast export` as a library call: plan formats from the table, write and verify each set.

Sets land in ``<out>/<model>/<weights tag>/<format>-<precision>/``; engines reuse the ONNX set.
The parity check is the caller's (samfast.eval.verify.verify_set): export sits below eval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from samfast.artifacts.formats import EXPORT_FORMATS, set_name
from samfast.artifacts.graphs import DEFAULT_OPSET
from samfast.errors import InputError
from samfast.export.cache import set_lock
from samfast.export.set_writer import build_set


@dataclass
class ExportRequest:
    model: str
    formats: list[str]
    precision: str = "fp32"
    out_dir: Path | None = None
    checkpoint: Path | None = None
    random_weights: bool = False
    opset: int = DEFAULT_OPSET
    max_prompts: int = 64
    max_slices: int = 16
    max_points: int = 10
    workspace_gib: float = 4.0
    verify: bool = True


@dataclass
class PlannedSet:
    fmt: str
    precision: str
    skip_reason: str | None = None


@dataclass
class ExportOutcome:
    fmt: str
    precision: str
    folder: Path | None = None
    skipped: str | None = None
    manifest: dict = field(default_factory=dict)


def format_unavailable(fmt: str) -> str | None:
    """Why this machine cannot build ``fmt`` (one line), or None."""
    spec = EXPORT_FORMATS[fmt]
    if spec.needs_tensorrt or spec.needs_gpu:
        from samfast.artifacts.gpu import tensorrt_available

        ok, reason = tensorrt_available()
        if not ok:
            return f"needs a CUDA GPU and TensorRT ({reason})"
    return None


def plan(formats: list[str], precision: str) -> list[PlannedSet]:
    """Check names and format/precision combinations; mark what this machine cannot build.

    Named explicitly, an unsupported precision is an error; under "all" that format is skipped.
    """
    wanted = list(EXPORT_FORMATS) if "all" in formats else formats
    unknown = [f for f in wanted if f not in EXPORT_FORMATS]
    if unknown:
        raise InputError(f"unknown format {unknown[0]!r}; choose from {', '.join(EXPORT_FORMATS)} or all")
    planned = []
    for fmt in dict.fromkeys(wanted):
        offered = EXPORT_FORMATS[fmt].precisions
        if precision not in offered:
            if "all" not in formats:
                raise InputError(f"format {fmt} offers precision {', '.join(offered)}, not {precision}")
            planned.append(PlannedSet(fmt, precision, f"{fmt} has no {precision} precision"))
            continue
        planned.append(PlannedSet(fmt, precision, format_unavailable(fmt)))
    if all(p.skip_reason for p in planned):
        reasons = "; ".join(f"{p.fmt}: {p.skip_reason}" for p in planned)
        raise InputError(f"nothing to export on this machine: {reasons}")
    return planned


def export_model(
    request: ExportRequest,
    log: Callable[[str], None] = print,
    verify_set: Callable[[object, str, str, Path], dict] | None = None,
) -> list[ExportOutcome]:
    """``verify_set(model, fmt, precision, folder)`` returns a parity summary with "passed"; it is
    required when ``request.verify`` (samfast.eval.verify.verify_set is the project's check)."""
    from samfast.artifacts.layout import default_engine_dir
    from samfast.models import build_model, get_spec, resolve_weights

    if request.verify and verify_set is None:
        raise ValueError("request.verify needs verify_set (e.g. samfast.eval.verify.verify_set)")
    spec = get_spec(request.model)
    planned = plan(request.formats, request.precision)  # before the (slow) model build
    weights = resolve_weights(spec.name, request.checkpoint, request.random_weights)
    root = Path(request.out_dir or default_engine_dir()) / spec.name / weights.tag
    model = build_model(spec.name, weights=weights)
    outcomes = []
    for item in planned:
        if item.skip_reason:
            outcomes.append(ExportOutcome(item.fmt, item.precision, skipped=item.skip_reason))
            continue
        target = root / set_name(item.fmt, item.precision)
        verify = None
        if request.verify:

            def verify(folder, fmt=item.fmt, precision=item.precision):
                log(f"checking {set_name(fmt, precision)} parity against torch fp32 on real slices")
                return verify_set(model, fmt, precision, folder)

        writer = _writer(item, model, request, root, log)
        # The lock a first run's export takes: a command reading or writing this set meanwhile
        # waits for it rather than reading a folder being replaced.
        with set_lock(target, log):
            manifest = build_set(
                target,
                spec,
                weights,
                item.fmt,
                item.precision,
                request.opset if item.fmt != "torchscript" else None,
                writer,
                verify,
                log,
            )
        outcomes.append(ExportOutcome(item.fmt, item.precision, target, manifest=manifest))
    return outcomes


def _writer(item: PlannedSet, model, request: ExportRequest, root: Path, log) -> Callable[[Path], dict]:
    if item.fmt == "onnx":
        from samfast.export.onnx_export import write_onnx

        return lambda tmp: write_onnx(model, tmp, request.opset, log)
    if item.fmt == "torchscript":
        from samfast.export.torchscript_export import write_torchscript

        return lambda tmp: write_torchscript(model, tmp, log)

    def engines(tmp: Path) -> dict:
        from samfast.artifacts.gpu import gpu_identity
        from samfast.export.cache import ensure_onnx
        from samfast.export.tensorrt_build import write_engines

        onnx_folder = ensure_onnx(
            model.samfast_spec.name, model.samfast_weights, root.parent.parent, request.opset, log
        )
        return write_engines(
            onnx_folder,
            tmp,
            model.samfast_spec,
            item.precision,
            request.max_slices,
            request.max_prompts,
            request.max_points,
            request.workspace_gib,
            timing_cache=_timing_cache_path(root, gpu_identity()),
            log=log,
        )

    return engines


def _timing_cache_path(root: Path, identity: dict) -> Path:
    """One timing cache per GPU architecture and TensorRT version: others' timings do not apply."""
    tag = f"sm{identity['compute_capability']}-trt{identity['tensorrt']}".replace(".", "_")
    return root / f"tensorrt-timing-{tag}.cache"
