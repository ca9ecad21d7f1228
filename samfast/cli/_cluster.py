"""--ray for `bench brats` and `eval`: join Ray, build the executor, show the whole cluster's progress."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from samfast.errors import InputError

SINGLE_PROCESS = {"kind": "process", "workers": 1}


@contextmanager
def executor(options, primary: dict, compare: dict | None, console: Console) -> Iterator:
    """None (this process) without --ray; else a RayExecutor, connected for the block's duration."""
    if options.ray is None:
        if options.workers != 1 or options.cpus_per_worker is not None or options.gpus_per_worker:
            raise InputError("--workers, --cpus-per-worker and --gpus-per-worker need --ray")
        yield None
        return
    from samfast.eval import ray_executor

    with ray_executor.session(options.ray) as ray:
        cpus = ray_executor.worker_resources(
            ray, options.workers, options.cpus_per_worker, options.gpus_per_worker
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
                address=options.ray,
                workers=options.workers,
                cpus_per_worker=cpus,
                gpus_per_worker=options.gpus_per_worker,
                on_status=show,
                log=lambda m: console.print(m, markup=False, highlight=False),
            )


def record(executor) -> dict:
    """Where the cases ran, for summary.json and the report (not config.json: a resumed run may use
    another number of workers and still write the same rows)."""
    return SINGLE_PROCESS if executor is None else executor.record()
