"""schemathesis against `samfast serve` on loopback with its stateful phase: the spec's links carry
the `session` of an open to every session route, so prompt, undo, describe, mask, RTSTRUCT export and
close are fuzzed on live sessions, not only answered 404.

A tiny random-weights model keeps it short: the contract is under test here, not the masks.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dicom_fixtures import build_series, tumour_crop
from serve_fixtures import serve_in_thread

from samfast import Predictor
from samfast.serve.app import create_app
from samfast.serve.limits import Limits

KEY = "fuzz-key-0123456789abcdef"
HOOKS = Path(__file__).with_name("serve_fuzz_hooks.py")
SESSION_ROUTES = ("prompt", "undo", "mask", "rtstruct", "describe", "close")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz").resolve()
    data = base / "data"
    series = build_series(tumour_crop("BraTS20_Demo_002", slices=8, size=64)[0], data / "series")
    predictor = Predictor("tiny_vit_test", backend="onnxruntime", random_weights=True)
    app = create_app(predictor, KEY, max_sessions=4, cache_slices=8, limits=Limits(allow_roots=(data,)))
    with serve_in_thread(app) as url:
        yield {"base": base, "series": series, "url": url}


def _route(url: str) -> str:
    """prompt, undo, mask, rtstruct, describe or close for a session route's URL; else ''."""
    parts = url.split("?")[0].split("/sessions/", 1)[-1].split("/") if "/sessions/" in url else []
    if not parts or parts[0] == "upload":
        return ""
    return parts[1] if len(parts) > 1 else ""


def test_stateful_fuzz_reaches_live_sessions(served):
    base, reports = served["base"], served["base"] / "reports"
    config = base / "schemathesis.toml"
    # A schema cannot say which bytes are a readable NIfTI: a schema-valid upload of random bytes is
    # rightly refused (400), so that one operation lists 400 among the answers to valid data.
    config.write_text(
        '[[operations]]\ninclude-path = "/sessions/upload"\n'
        'checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "413"]\n'
    )
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
        f"{served['url']}/openapi.json", "-H", f"X-API-Key: {KEY}", "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful", "--seed", "1", "--max-examples", "20",
        "--workers", "1", "--report", "json,har", "--report-dir", str(reports),
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "SAMFAST_FUZZ_VOLUME": str(served["series"])}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=base, env=env)
    tail = result.stdout[-4000:]
    report = json.loads(next(reports.glob("json-*.json")).read_text())
    har = json.loads(next(reports.glob("har-*.json")).read_text())["log"]["entries"]
    statuses = collections.Counter()
    for entry in har:
        request, method = entry["request"]["url"], entry["request"]["method"]
        route = _route(request) or ("describe" if method == "GET" else "close" if method == "DELETE" else "")
        if "/sessions/" in request and "/sessions/upload" not in request and route:
            statuses[route, entry["response"]["status"]] += 1
    lines = [line.strip() for line in result.stdout.splitlines()]
    summary = [line for line in lines if line.startswith(("Scenarios:", "API Links:", "Filtered:"))]
    summary += [line for line in lines if " generated" in line]
    print(f"\nschemathesis {' '.join(command[3:])}\n{summary}\nsession routes: {sorted(statuses.items())}")

    assert result.returncode == 0, tail
    assert report["phases"]["stateful"]["status"] == "success", report["phases"]
    assert report["failures"] == [] and report["errors"] == [], tail
    assert any(line.startswith("Scenarios:") and int(line.split()[1]) > 0 for line in lines), tail
    assert not [key for key in statuses if key[1] >= 500]
    for route in SESSION_ROUTES:  # each answered something other than "no such session"
        assert any(r == route and status != 404 for r, status in statuses), (route, statuses)
    assert statuses["prompt", 200] and statuses["mask", 200] and statuses["describe", 200], statuses
