"""A Python script run in a child process that prints its findings as one JSON line, last: how the
tests look at a fresh interpreter (which modules it imports, which threads its BLAS uses)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def run_json(script: str, *args, timeout: float = 300, env: dict | None = None) -> dict:
    """``python -c script args...`` in the checkout; fails the test with its stderr tail on a non-zero
    exit, else returns the JSON object of its last output line."""
    run = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
