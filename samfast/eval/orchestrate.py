"""An evaluation run from found cases to verdict: the predictors, the run, summary.json, the report,
and whether parity or the accuracy gate failed. `bench brats` and `eval` show what this returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from samfast.errors import InputError
from samfast.eval.datasets import Case, Skipped
from samfast.eval.executors import CaseExecutor, LocalExecutor
from samfast.eval.settings import Settings, slice_protocols

# (primary recipe, compare recipe or None) -> a context giving the executor the cases run on
Cluster = Callable[[partial, partial | None], AbstractContextManager[CaseExecutor]]


@dataclass
class Outcome:
    summary: dict
    report: Path
    random_weights: bool
    failure: str | None  # one line when parity or the accuracy gate failed


@contextmanager
def in_this_process(primary: partial, compare: partial | None) -> Iterator[CaseExecutor]:
    yield LocalExecutor()


def evaluate(
    cases: list[Case],
    skipped: list[Skipped],
    settings: Settings,
    data: str,
    log: Callable[[str], None],
    progress: Callable[[Iterable, int, str], Iterable] = lambda items, total, label: items,
    cluster: Cluster = in_this_process,
    profile: dict | None = None,
) -> Outcome:
    """Every per-slice protocol of ``settings`` on ``cases`` (found in ``data``), written to
    ``settings.out``; ``cluster`` runs the cases (a Ray cluster, or this process). ``profile``: the
    machine profile the primary backend and precision may come from (Predictor's ``profile``)."""
    from samfast.eval import records
    from samfast.eval.report import write_report
    from samfast.eval.run import Evaluation
    from samfast.eval.summary import summarise
    from samfast.models import get_spec

    slice_protocols(settings.protocol)  # refuses --protocol volume: it is not per slice
    records.make_out_dir(settings.out)  # before any model is loaded: a bad --out costs nothing
    if settings.cases is not None:
        cases = cases[: settings.cases]
    if not cases:
        raise InputError(f"{data}: no usable case ({len(skipped)} skipped: {skipped[0].reason})")
    spec = get_spec(settings.model)
    recipe = partial(_recipe, settings, spec.name)
    primary = recipe(settings.backend, settings.precision)(log=log, profile=profile)
    backend, precision = primary.choice.backend, primary.choice.precision
    # The compare backend is the fp32 reference, so a reduced precision compares even on its backend.
    same = settings.compare == backend and precision == "fp32"
    compare = recipe(settings.compare)(log=log) if settings.compare and not same else None
    config = {
        "data": data,
        "model": spec.name,
        "weights": primary.weights.label,
        "backend": backend,
        "precision": precision,
        "compare": settings.compare if compare else None,
        "device": settings.device,
        "cases": [c.case_id for c in cases],
    }
    evaluation = Evaluation(
        (backend, primary),
        (settings.compare, compare) if compare else None,
        settings,
        settings.out,
        progress,
        log=log,
    )
    compare_recipe = recipe(settings.compare) if compare else None
    with cluster(recipe(backend, precision), compare_recipe) as executor:
        rows = evaluation.run(cases, skipped, config, settings.fresh, executor=executor)
        ran_on = executor.record()
    timings = records.read_rows(settings.out / records.TIMINGS)
    summary = summarise(rows, timings, {**config, "settings": settings.record()}, evaluation.wall_s, ran_on)
    records.atomic_write_bytes(
        settings.out / records.SUMMARY, (json.dumps(summary, indent=2) + "\n").encode()
    )
    written = write_report(settings.out, summary, rows, primary.weights.random)
    return Outcome(
        summary, written[0], primary.weights.random, _failure(summary, precision, settings.compare)
    )


def _recipe(settings: Settings, model: str, backend: str | None, precision: str | None = "fp32") -> partial:
    """A picklable Predictor recipe: each Ray worker builds its own predictor from it."""
    from samfast import Predictor
    from samfast.artifacts.layout import default_engine_dir

    return partial(
        Predictor,
        model,
        backend=backend,
        device=settings.device,
        precision=precision,
        checkpoint=settings.checkpoint,
        random_weights=settings.random_weights,
        engine_dir=default_engine_dir(),
    )


def _failure(summary: dict, precision: str, compare: str | None) -> str | None:
    """A reduced precision is judged by task accuracy (the gate), fp32 by the strict parity rows."""
    if precision != "fp32":
        gate = summary.get("precision_gate") or {}
        failed = [p for p, v in gate.get("protocols", {}).items() if not v["passed"]]
        return f"{precision} failed the accuracy gate for {', '.join(failed)}" if failed else None
    from samfast.eval.parity import RUN_PARITY

    failed = [protocol for protocol, p in summary["parity"].items() if RUN_PARITY.failed(p)]
    return f"parity with {compare} failed for {', '.join(failed)}" if failed else None
