"""--ray for `bench brats` and `eval`: join Ray, build the executor, show the whole cluster's progress."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from samfast.eval.executors import CaseExecutor, LocalExecutor
from samfast.eval.settings import Settings


@contextmanager
def executor(
    settings: Settings, primary: partial, compare: partial | None, console: Console
) -> Iterator[CaseExecutor]:
    """This process without --ray; else a RayExecutor, connected for the block's duration."""
    if settings.ray is None:
        yield LocalExecutor()
        return
    from samfast.eval import ray_executor

    with ray_executor.session(settings.ray) as ray:
        cpus = ray_executor.worker_resources(
            ray, settings.workers, settings.cpus_per_worker, settings.gpus_per_worker
        )
        columns = (
            TextColumn("[bold]cases"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.2f} slices/s, {task.fields[alive]} workers alive"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("cases", total=None, rate=0.0, alive="0/0")

            def show(status) -> None:
                bar.update(
                    task,
                    total=status.cases_total,
                    completed=status.cases_done,
                    rate=status.slices_per_s,
                    alive=f"{status.workers_alive}/{status.workers}",
                )

            yield ray_executor.RayExecutor(
                primary,
                compare,
                address=settings.ray,
                workers=settings.workers,
                cpus_per_worker=cpus,
                gpus_per_worker=settings.gpus_per_worker,
                on_status=show,
                log=lambda m: console.print(m, markup=False, highlight=False),
            )
