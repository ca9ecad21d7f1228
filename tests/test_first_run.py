"""A first run with an empty engines folder exports its set in a child process.

The user's process never imports torch on ONNX Runtime, even the first time; the child's failure
comes back as one line (exit status 2 from the CLI); two first runs at once leave one valid set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from child import run_json
from conftest import REPO

from samfast.artifacts.layout import find_set
from samfast.export.cache import SetRequest
from samfast.export.child import ExportFailed, export_in_child
from samfast.models import WeightsInfo, get_spec, resolve_weights
from samfast.models.checkpoints import RANDOM_SEED

MODEL = "tiny_vit_test"

_FIRST_PREDICTION = """
import json, sys
import numpy as np
from samfast import Predictor
messages = []
predictor = Predictor(sys.argv[1], "onnxruntime", log=messages.append)
predictor.set_image(np.random.default_rng(0).random((64, 80), dtype=np.float32))
masks, iou, _ = predictor.predict(box=np.array([10, 12, 40, 50]), multimask_output=False)
print(json.dumps({"torch": "torch" in sys.modules, "messages": messages, "shape": list(masks.shape)}))
"""


def _env(engines) -> dict:
    return os.environ | {"SAMFAST_ENGINES": str(engines)}


def test_a_first_prediction_on_onnxruntime_exports_in_a_child_and_never_imports_torch(tmp_path):
    engines = tmp_path / "engines"
    first = run_json(_FIRST_PREDICTION, MODEL, env=_env(engines))
    assert first["torch"] is False and first["shape"] == [1, 64, 80]
    announced = [m for m in first["messages"] if m.startswith(f"exporting the onnx set for {MODEL}")]
    assert len(announced) == 1 and "first run only" in announced[0]
    assert any(m.startswith(f"exporting {MODEL} encoder to ONNX") for m in first["messages"])  # relayed
    find_set(get_spec(MODEL), resolve_weights(MODEL), "onnx", "fp32", engines)  # raises if not valid

    second = run_json(_FIRST_PREDICTION, MODEL, env=_env(engines))
    assert second["torch"] is False and second["shape"] == first["shape"]
    assert not any("export" in m for m in second["messages"]), second["messages"]


def test_a_failing_export_comes_back_as_one_line_naming_its_reason(tmp_path):
    checkpoint = tmp_path / "lite_medsam.pth"
    checkpoint.write_bytes(b"not the weights the caller checked")
    weights = WeightsInfo(random=False, sha256="0" * 64, path=str(checkpoint))
    with pytest.raises(ExportFailed) as failed:
        export_in_child(
            SetRequest("litemedsam", weights, "onnx", engine_dir=tmp_path / "engines"), log=lambda m: None
        )
    message = str(failed.value)
    assert "\n" not in message and "Traceback" not in message
    assert (
        message.startswith("exporting the onnx set for litemedsam failed: checkpoint") and "sha256" in message
    )
    assert not (tmp_path / "engines" / "litemedsam").exists() or not any(
        (tmp_path / "engines" / "litemedsam").rglob("*.onnx")
    )


def test_the_cli_shows_a_failed_first_export_as_one_error_line_and_exit_status_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the engines folder's parent should be")
    image = REPO / "data" / "brats_demo" / "BraTS20_Demo_001" / "BraTS20_Demo_001_t1ce.nii.gz"
    command = [sys.executable, "-m", "samfast", "predict", str(image), "--slice", "94"]
    command += ["--box", "60", "70", "140", "150", "--model", MODEL, "--out", str(tmp_path / "mask.nii.gz")]
    run = subprocess.run(command, capture_output=True, text=True, env=_env(blocker / "engines"), timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"exporting the onnx set for {MODEL} failed" in errors[0]
    assert "cannot write there" in errors[0]


def test_two_first_runs_at_once_write_one_valid_set(tmp_path):
    engines = tmp_path / "engines"
    command = [sys.executable, "-m", "samfast.export.child", MODEL, "onnx", "fp32", str(engines)]
    command += ["--seed", str(RANDOM_SEED)]
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], [err[-2000:] for _, err in outputs]
    written = [line for out, _ in outputs for line in out.splitlines() if line.startswith("wrote ")]
    assert len(written) == 1, outputs  # the second waited for the lock, then took the first's set
    folder = find_set(get_spec(MODEL), resolve_weights(MODEL), "onnx", "fp32", engines)
    assert not [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_samfast_export_waits_for_the_lock_a_first_run_holds_on_the_same_set(tmp_path):
    from samfast.export.cache import set_lock

    engines = tmp_path / "engines"
    weights = resolve_weights(MODEL)
    folder = SetRequest(MODEL, weights, "onnx", "fp32", engines).folder
    command = [
        sys.executable,
        "-m",
        "samfast",
        "export",
        "--model",
        MODEL,
        "--out",
        str(engines),
        "--no-verify",
    ]
    with set_lock(folder, log=lambda message: None):  # a first run's export of this very set, under way
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.extend(child.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "waiting for it" not in " ".join("".join(said).split()):
            time.sleep(0.2)  # the export says once that it waits (a terminal may wrap the line)
        waiting = " ".join("".join(said).split())
        assert "another samfast process is writing" in waiting, waiting[-2000:]
        assert child.poll() is None and not folder.exists()
    child.wait(timeout=300)
    reader.join(timeout=30)
    assert child.returncode == 0, "".join(said)[-2000:]
    assert find_set(get_spec(MODEL), weights, "onnx", "fp32", engines) == folder
