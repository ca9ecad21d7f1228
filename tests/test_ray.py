"""`bench brats --ray`: the same rows as one process, whether the cases run on a local Ray instance, on a
two-node cluster or on workers that get killed mid-case. The tests start their own Ray (a private
local instance; a head and a second node on 127.0.0.1 with their own temp dir and auth token) and stop
exactly the processes they started. The tiny random-weights SAM keeps each run to seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import DEMO, REPO
from typer.testing import CliRunner

from samfast.cli import app

if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed (pip install 'samfast[ray]')", allow_module_level=True)
# Ray enables token auth and reads its mode when imported: this module's own token, set first, so
# nothing reads or writes ~/.ray and no other Ray on the machine accepts these clients.
OWN_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex, "RAY_USAGE_STATS_ENABLED": "0"}
SAVED_ENV = {name: os.environ.get(name) for name in OWN_ENV}
os.environ.update(OWN_ENV)
import ray  # noqa: E402

TINY = ("--model", "tiny_vit_test", "--random-weights")
RUN = (*TINY, "--protocol", "box,points-putz", "--slices-per-case", 3, "--crop")
EMPTY = "BraTS20_Demo_001b"  # between the two demo cases: its label holds no tumour (skipped by a worker)


def bench(*args):
    return CliRunner().invoke(app, ["bench", "brats", *map(str, args)], env={"COLUMNS": "200"})


def rows(out: Path) -> list[str]:
    return (out / "results.jsonl").read_text().splitlines()


def assert_same_rows(got: list[str], want: list[str]) -> None:
    """Same rows, byte for byte, in the same order: a 1-thread worker computes exactly what the
    2-thread process does (tests/test_thread_invariance.py pins each computation)."""
    assert len(got) == len(want)
    for line, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a == b, f"row {line} differs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("brats")
    for case in ("BraTS20_Demo_001", "BraTS20_Demo_002"):
        shutil.copytree(DEMO / case, root / case)
    (root / EMPTY).mkdir()
    image = DEMO / "BraTS20_Demo_001" / "BraTS20_Demo_001_t1ce.nii.gz"
    shutil.copy(image, root / EMPTY / f"{EMPTY}_t1ce.nii.gz")
    label = sitk.ReadImage(str(DEMO / "BraTS20_Demo_001" / "BraTS20_Demo_001_seg.nii.gz"))
    sitk.WriteImage(label * 0, str(root / EMPTY / f"{EMPTY}_seg.nii.gz"))
    return root


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    result = bench(*RUN, "--data", data, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module", autouse=True)
def own_env():
    yield
    for name, value in SAVED_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node on loopback, one CPU each; yields the head's address."""
    ray_cli = Path(sys.executable).parent / "ray"
    temp = tempfile.mkdtemp(prefix="ray16-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the workers import this checkout's samfast
    common = ("--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", 10**8)
    commands = [
        (
            ray_cli,
            "start",
            "--head",
            "--port",
            port,
            "--include-dashboard",
            "false",
            "--temp-dir",
            temp,
            *common,
        ),
        (ray_cli, "start", "--address", address, *common),
    ]
    nodes = []
    try:
        for command in commands:
            # Each node in a session of its own, so its whole process group can be stopped.
            nodes.append(
                subprocess.Popen(
                    [str(c) for c in command],
                    env=env,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            if len(nodes) == 1:
                _wait_for(address, 1)
        _wait_for(address, 2)
        yield address
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for(address: str, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.init(address=address, log_to_driver=False)
            alive = sum(1 for n in ray.nodes() if n["Alive"])
            ray.shutdown()
            if alive >= count:
                return
        except (ConnectionError, RuntimeError):
            pass
        time.sleep(1)
    raise AssertionError(f"Ray cluster at {address} never showed {count} nodes")


def _stop(node: subprocess.Popen) -> None:
    """SIGTERM to the node's process group (`ray start --block` stops its processes), then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            break
        try:
            node.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            try:  # what --block left behind in the group (workers) goes too
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        break


def test_local_ray_two_workers_gives_the_single_process_rows(single, data, tmp_path):
    out = tmp_path / "local"
    result = bench(*RUN, "--data", data, "--out", out, "--ray", "local", "--workers", 2)
    assert result.exit_code == 0, result.output
    assert_same_rows(rows(out), rows(single))  # content and order, skipped case included
    assert any(json.loads(r)["row"] == "skipped" and json.loads(r)["case"] == EMPTY for r in rows(out))
    summary = json.loads((out / "summary.json").read_text())
    executor = summary["executor"]
    assert executor["kind"] == "ray" and executor["address"] == "local"
    assert executor["workers"] == 2 and executor["nodes"] == 1 and executor["cpus_per_worker"] == 1
    assert executor["ray"] == ray.__version__
    assert json.loads((single / "summary.json").read_text())["executor"]["kind"] == "process"
    assert "Ran on Ray" in (out / "summary.md").read_text()
    assert not ray.is_initialized()  # `local` stopped its instance


def test_two_node_cluster_gives_the_single_process_rows(single, data, tmp_path, cluster):
    out = tmp_path / "cluster"
    result = bench(*RUN, "--data", data, "--out", out, "--ray", cluster, "--workers", 2)
    assert result.exit_code == 0, result.output
    assert_same_rows(rows(out), rows(single))
    executor = json.loads((out / "summary.json").read_text())["executor"]
    assert (executor["address"], executor["nodes"], executor["cluster_nodes"]) == ("address", 2, 2)


def test_a_worker_killed_mid_case_loses_and_duplicates_nothing(single, data, tmp_path, cluster):
    from samfast import Predictor
    from samfast.artifacts.layout import default_engine_dir
    from samfast.eval.datasets import find_brats_cases
    from samfast.eval.ray_executor import RayExecutor, session
    from samfast.eval.run import Evaluation, Settings

    recipe = partial(Predictor, "tiny_vit_test", random_weights=True, engine_dir=default_engine_dir())
    settings = Settings(protocol="box,points-putz", slices_per_case=3, crop=True)
    killed: list[int] = []
    alive: list[tuple[bool, int]] = []  # (after the kill?, workers alive) as the progress bar saw it

    def kill_once(status) -> None:
        alive.append((bool(killed), status.workers_alive))
        # A case goes only to a loaded worker: 0.5 s in, that worker is inside the case.
        for pid, started in status.running.values():
            if not killed and time.perf_counter() - started > 0.5:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    cases, skipped = find_brats_cases(data)
    evaluation = Evaluation(("onnxruntime", recipe(log=lambda m: None)), None, settings, tmp_path)
    with session(cluster):
        executor = RayExecutor(recipe, address=cluster, workers=2, on_status=kill_once)
        evaluation.run(cases, skipped, {}, executor=executor)
        assert executor.record()["worker_restarts"] == 1
    assert killed
    assert any(not after and count >= 1 for after, count in alive)
    assert any(after and count < 2 for after, count in alive)  # the bar counted the dead worker out
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # that process is really gone
    assert_same_rows(rows(tmp_path), rows(single))


def test_an_interrupted_driver_resumes_with_another_worker_count(single, data, tmp_path, cluster):
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(single / "config.json", out / "config.json")
    complete = rows(single)
    # The first run (one process) stopped in the middle of a slice of the second case.
    cut = len(complete) - 9
    (out / "results.jsonl").write_text("\n".join(complete[:cut]) + "\n" + complete[cut][:40])
    result = bench(*RUN, "--data", data, "--out", out, "--ray", cluster, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert_same_rows(rows(out), complete)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workers", 2), "need --ray"),
        (("--ray", "CLUSTER", "--workers", 3), "does not fit this Ray cluster"),
        (("--ray", "CLUSTER", "--cpus-per-worker", 0), "give positive amounts"),
    ],
)
def test_bad_ray_options_are_one_line_and_exit_2(args, message, data, tmp_path, cluster):
    args = [cluster if a == "CLUSTER" else a for a in args]
    result = bench(*RUN, "--data", data, "--out", tmp_path / "bad", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "bad" / "results.jsonl").exists()


def test_info_says_whether_ray_is_installed():
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)["executors"]["ray"]
    assert entry["usable"] and entry["version"] == ray.__version__
