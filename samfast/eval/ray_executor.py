"""Cases spread over a Ray cluster: each worker is an actor that loads its models once and keeps them.

A worker runs a whole case (``Evaluation.case_rows``) and hands its row batches back; the executor
yields cases to the driver in case order as soon as a case and every earlier one are done, so the
driver alone writes the same ``results.jsonl`` as a single-process run. At most ``2 × workers`` cases
are in flight or waiting for their turn, which bounds the driver's memory.

A case is the unit of retry: when a worker dies mid-case, the case goes back to the queue and the next
idle worker redoes it from its start (nothing of the lost attempt was written); the dead actor is
restarted by Ray (bounded by ``retries``) and rejoins once its models are loaded again.

Ray is imported here only, when a run asks for it (``pip install 'samfast[ray]'``).
"""

from __future__ import annotations

import heapq
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from samfast.errors import InputError, SamfastError

LOCAL_OBJECT_STORE_MB = 256  # a case's rows are ~4 kB per slice and protocol: small, inlined or shared
STATUS_EVERY_S = 0.5  # how often the driver wakes to refresh its progress line while cases run
DEFAULT_RETRIES = 2


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class CaseWorker:
    """One worker: its predictors and an Evaluation, built once in ``__init__``, then case after case.

    ``primary`` / ``compare`` are (backend name, recipe): a picklable callable that builds the
    predictor (e.g. ``functools.partial(Predictor, ...)``), since a loaded model cannot travel.
    """

    def __init__(
        self, primary: tuple[str, Callable], compare: tuple[str, Callable] | None, settings, threads
    ):
        import torch

        from samfast.eval.run import Evaluation

        torch.set_num_threads(threads)  # the actor's CPU share, not every core of its node

        def build(name: str, recipe: Callable):
            return name, recipe(threads=threads, log=lambda m: print(m, file=sys.stderr))

        # out_dir is never written: case_rows only computes, the driver writes.
        self.evaluation = Evaluation(
            build(*primary), build(*compare) if compare else None, settings, Path(os.devnull)
        )

    def ready(self) -> tuple[int, str]:
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def run(self, case, previous: list[dict]) -> tuple[list, str | None]:
        """Every batch of the case, and the InputError that stopped it (then the case is skipped)."""
        batches: list = []
        try:
            for batch in self.evaluation.case_rows(case, previous):
                batches.append(batch)
        except InputError as error:
            return batches, str(error) or type(error).__name__
        return batches, None


def _replay(batches: list, error: str | None):
    """A finished case as the driver sees a local one: its batches, then its InputError if any."""
    yield from batches
    if error is not None:
        raise InputError(error)


@dataclass
class ClusterStatus:
    """What the progress bar shows; updated by the executor on the driver."""

    cases_total: int
    workers: int
    cases_done: int = 0  # handed to the driver, in case order
    slices_done: int = 0
    workers_alive: int = 0
    retries: int = 0
    running: dict[str, tuple[int, float]] = field(default_factory=dict)  # case id -> (pid, started)
    started: float = field(default_factory=time.perf_counter)

    @property
    def slices_per_s(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.slices_done / elapsed if elapsed > 0 else 0.0


class RayExecutor:
    """A CaseExecutor over Ray actors. Connect first (``session``); ``map`` starts and stops the actors.

    ``primary`` / ``compare``: picklable callables that build the predictors (keyword arguments
    ``threads`` and ``log`` are added), the same recipe the driver built its own from.
    """

    def __init__(
        self,
        primary: Callable,
        compare: Callable | None = None,
        address: str = "local",
        workers: int = 1,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        retries: int = DEFAULT_RETRIES,
        on_status: Callable[[ClusterStatus], None] = lambda status: None,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.primary, self.compare, self.address = primary, compare, address
        self.workers, self.cpus, self.gpus = workers, cpus_per_worker, gpus_per_worker
        self.retries, self.on_status, self.log = retries, on_status, log
        self.pids: dict[int, int] = {}  # actor index -> pid of its current process
        self.nodes: set[str] = set()
        self.status: ClusterStatus | None = None

    def map(self, evaluation, cases, previous) -> Iterator:
        import ray

        if not cases:
            return
        worker = ray.remote(CaseWorker).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=self.retries, max_task_retries=0
        )
        primary = (evaluation.primary[0], self.primary)
        compare = (evaluation.compare[0], self.compare) if evaluation.compare else None
        threads = max(1, round(self.cpus))
        actors = [
            worker.remote(primary, compare, evaluation.settings, threads)
            for _ in range(min(self.workers, len(cases)))
        ]
        self.status = ClusterStatus(len(cases), len(actors))
        try:
            yield from self._schedule(ray, actors, cases, previous)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    def _schedule(self, ray, actors, cases, previous) -> Iterator:
        from ray.exceptions import RayActorError

        status = self.status
        # An actor takes cases once its models are loaded; a restarted one rejoins the same way.
        probes = {actor.ready.remote(): index for index, actor in enumerate(actors)}
        idle: list[int] = []
        running: dict = {}  # object ref -> (case index, actor index)
        pending = list(range(len(cases)))  # a heap: a retried case goes before later ones
        finished: dict[int, tuple[list, str | None]] = {}
        attempts: Counter[int] = Counter()
        window = 2 * len(actors)
        last_error = ""
        following = 0  # the next case the driver gets
        while following < len(cases):
            if following in finished:
                batches, error = finished.pop(following)
                status.cases_done += 1
                self.on_status(status)
                yield cases[following], _replay(batches, error)
                following += 1
                continue
            while idle and pending and pending[0] < following + window:
                index, actor = heapq.heappop(pending), idle.pop()
                case = cases[index]
                ref = actors[actor].run.remote(case, previous.get(case.case_id, []))
                running[ref] = (index, actor)
                status.running[case.case_id] = (self.pids[actor], time.perf_counter())
            if not running and not probes:
                raise SamfastError(f"every Ray worker died; last error: {last_error}")
            status.workers_alive = len(idle) + len(running)
            self.on_status(status)
            ready, _ = ray.wait([*running, *probes], num_returns=1, timeout=STATUS_EVERY_S)
            for ref in ready:
                if ref in probes:
                    actor = probes.pop(ref)
                    try:
                        self.pids[actor], node = ray.get(ref)
                    except RayActorError as error:  # restarts used up, or its models failed to load
                        last_error = _first_line(error)
                        self.log(f"ray worker {actor} is gone: {last_error}")
                        continue
                    self.nodes.add(node)
                    idle.append(actor)
                    continue
                index, actor = running.pop(ref)
                case_id = cases[index].case_id
                status.running.pop(case_id, None)
                try:
                    finished[index] = ray.get(ref)
                except RayActorError as error:
                    attempts[index] += 1
                    last_error = _first_line(error)
                    if attempts[index] > self.retries:
                        raise SamfastError(
                            f"case {case_id}: its Ray worker died {attempts[index]} times; last: {last_error}"
                        ) from None
                    status.retries += 1
                    self.log(f"ray worker {actor} died during {case_id}; the case is redone")
                    heapq.heappush(pending, index)
                    # Ray restarts the actor; this call returns once it is back (or fails for good).
                    probes[actors[actor].ready.options(max_task_retries=-1).remote()] = actor
                    continue
                idle.append(actor)
                status.slices_done += sum(len(timings) for _, timings in finished[index][0])

    def record(self) -> dict:
        """The executor, as summary.json and the report state it."""
        import ray

        return {
            "kind": "ray",
            "address": address_kind(self.address),
            "workers": self.workers,
            "nodes": len(self.nodes),
            "cluster_nodes": sum(1 for node in ray.nodes() if node.get("Alive")),
            "cpus_per_worker": self.cpus,
            "gpus_per_worker": self.gpus,
            "worker_restarts": self.status.retries if self.status else 0,
            "ray": ray.__version__,
        }


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'samfast[ray]'") from None
    return ray


def address_kind(address: str) -> str:
    return address if address in ("local", "auto") else "address"


@contextmanager
def session(address: str, object_store_mb: int | None = None, num_cpus: int | None = None):
    """Ray for one command: ``local`` starts a private instance and stops it at the end; ``auto`` or
    an ADDRESS joins a running cluster (Ray's conventions: ``auto`` honours RAY_ADDRESS) and leaves it."""
    ray = _import_ray()
    # No usage report leaves the machine unless its owner turned it on.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kind = address_kind(address)
    try:
        if kind == "local":
            ray.init(
                address="local",
                # a private instance stays on loopback, never on the machine's network address
                _node_ip_address="127.0.0.1",
                num_cpus=num_cpus,
                object_store_memory=(object_store_mb or LOCAL_OBJECT_STORE_MB) * 2**20,
                include_dashboard=False,
            )
        else:
            ray.init(address=address)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise InputError(f"--ray {address}: {_first_line(error)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def worker_resources(ray, workers: int, cpus: float | None, gpus: float) -> float:
    """CPUs per worker (default: the cluster's CPUs shared out, at most one node's), checked to fit."""
    if workers < 1:
        raise InputError(f"--workers {workers}: give at least 1")
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if cpus is None:
        total = sum(n.get("CPU", 0) for n in nodes)
        cpus = float(max(1, min(total // workers, max(n.get("CPU", 0) for n in nodes))))
    if cpus <= 0 or gpus < 0:
        raise InputError(f"--cpus-per-worker {cpus:g} / --gpus-per-worker {gpus:g}: give positive amounts")

    def fits(node: dict) -> int:
        count = int(node.get("CPU", 0) // cpus)
        return min(count, int(node.get("GPU", 0) // gpus)) if gpus else count

    room = sum(fits(n) for n in nodes)
    if room < workers:
        raise InputError(
            f"--workers {workers} × ({cpus:g} CPU, {gpus:g} GPU) does not fit this Ray cluster "
            f"({len(nodes)} node(s), room for {room} worker(s))"
        )
    return cpus
