"""Where an evaluation's cases run: this process, or (elsewhere) a pool of workers.

An executor turns cases into their row batches and hands them back in case order; only the driver
(``Evaluation.run``) writes files, so every executor gives the same ``results.jsonl``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from samfast.eval.datasets import Case

# (result rows, timing rows) of one finished slice, or of a case's closing row.
Batch = tuple[list[dict], list[dict]]


class CaseExecutor(Protocol):
    def map(
        self, evaluation, cases: list[Case], previous: dict[str, list[dict]]
    ) -> Iterator[tuple[Case, Iterable[Batch]]]:
        """Yield each case with its batches, in the order of ``cases``.

        The batches may be produced lazily (a local run streams slice by slice); iterating them may
        raise InputError, which marks that case as skipped.
        """
        ...

    def record(self) -> dict:
        """The executor, as summary.json and the report state it."""
        ...


class LocalExecutor:
    """This process, one case after another, each slice's rows written as soon as it is done."""

    def map(self, evaluation, cases, previous):
        for case in cases:
            yield case, evaluation.case_rows(case, previous.get(case.case_id, []))

    def record(self) -> dict:
        return {"kind": "process", "workers": 1}
