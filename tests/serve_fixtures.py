"""`samfast serve` for the service tests, on loopback only: an app in a uvicorn thread of the test
process (the tests can reach its state), or the real command as its own process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from dicom_fixtures import free_port

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    runner = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        runner.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def serve_process(base: Path, key: str, *options: str) -> Iterator[dict]:
    """`samfast serve --api-key-file ... OPTIONS` as its own process, in ``base`` (its TMPDIR, and the
    log in base/server.log), on a free loopback port; yields url, port, process and log once /health
    answers; terminated at exit."""
    key_file = base / "key"
    key_file.write_text(key + "\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SAMFAST_API_KEY"}
    env.update(TMPDIR=str(base), PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "samfast", "serve", "--port", str(port), "--api-key-file", str(key_file)]
    log_path = base / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, *options], cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health", headers={"X-API-Key": key}, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("server did not start")
        yield {"url": url, "port": port, "process": process, "log": log_path}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
