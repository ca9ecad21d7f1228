"""Reduced precisions: the task accuracy gate, --precision, the machine profile and `samfast tune`.

The gate runs through the evaluation engine on real demo slices with the real LiteMedSAM weights;
a deliberately perturbed backend (a test double, not a backend) shows it refusing what it must.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from samfast import Predictor
from samfast.backends import cpu
from samfast.cli import app
from samfast.cli._common import machine_profile
from samfast.errors import InputError
from samfast.eval.datasets import find_brats_cases
from samfast.eval.parity import TASK_GATE, gate_verdict, precision_gate
from samfast.eval.run import Evaluation, Settings
from samfast.eval.summary import summarise
from samfast.io import find_demo_data
from samfast.runtime import precision as precision_module
from samfast.runtime.profile import load_profile, pick, profile_path, this_machine, write_profile

HAS_BF16_BACKEND = cpu.native_bf16() and importlib.util.find_spec("openvino") is not None


class ShrunkLogits:
    """Test double for the gate: a real backend whose mask logits are lowered by ``shift``, so
    every mask loses its border pixels (as a precision that biased the logits would)."""

    def __init__(self, backend, shift: float) -> None:
        self.inner, self.shift, self.name, self.info = backend, shift, backend.name, backend.info

    def encode(self, images):
        return self.inner.encode(images)

    def decode(self, embedding, prompts):
        masks, iou = self.inner.decode(embedding, prompts)
        return masks - self.shift, iou

    def decode_rows(self, embeddings, rows, prompts):
        masks, iou = self.inner.decode_rows(embeddings, rows, prompts)
        return masks - self.shift, iou

    def release(self, *graphs):
        self.inner.release(*graphs)

    def describe(self):
        return self.inner.describe() | {"perturbed": self.shift}


@pytest.fixture(scope="module")
def reference():
    return Predictor("litemedsam", backend="torch", precision="fp32")


@pytest.fixture(scope="module")
def onnx_fp32():
    return Predictor("litemedsam", backend="onnxruntime", threads=2)


def gate_of(candidate, reference, tmp_path, protocols, slices_per_case=1, min_area=1000, cases=1) -> dict:
    """The gate of ``candidate`` vs ``reference`` through Evaluation + summarise, as bench brats runs it."""
    found, _ = find_brats_cases(find_demo_data())
    settings = Settings(protocol=",".join(protocols), slices_per_case=slices_per_case, min_area=min_area)
    evaluation = Evaluation(("candidate", candidate), ("torch", reference), settings, tmp_path)
    rows = evaluation.run(found[:cases], [], {}, fresh=True)
    return summarise(rows, [], {"settings": settings.record()})["precision_gate"]


def test_the_gate_refuses_a_perturbed_backend_and_passes_an_fp32_one(reference, onnx_fp32, tmp_path):
    protocols = ("box", "points-putz")
    perturbed = Predictor.from_backend("litemedsam", onnx_fp32.weights, ShrunkLogits(onnx_fp32.backend, 4.0))
    refused = gate_of(perturbed, reference, tmp_path / "perturbed", protocols)
    assert refused["passed"] is False and set(refused["protocols"]) == set(protocols)
    for verdict in refused["protocols"].values():
        assert verdict["passed"] is False
        # Shrunk masks are worse against the ground truth and disagree with fp32's.
        assert verdict["delta_mean_dice"] < -TASK_GATE.max_delta_mean_dice
        assert verdict["agreement_dice"]["mean"] < 0.99
    accepted = gate_of(onnx_fp32, reference, tmp_path / "fp32", protocols)
    assert accepted["passed"] is True
    for verdict in accepted["protocols"].values():
        assert abs(verdict["delta_mean_dice"]) < 1e-3 and verdict["agreement_dice"]["share_ge_0.99"] == 1.0


def test_gate_verdict_uses_both_thresholds_and_reports_the_agreement_distribution():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.9, 20)
    agreement = list(rng.uniform(0.9, 1.0, 60))

    def records(dice_shift, iou_shift):
        return [
            {
                "best_iou": [b + iou_shift, b],
                "dice": [b + 0.05 + dice_shift, b + 0.05],
                "agreement": agreement[:3],
            }
            for b in base
        ]

    assert gate_verdict(records(0.004, -0.004))["passed"] is True
    assert gate_verdict(records(0.006, 0.0))["passed"] is False  # DSC alone fails it
    assert gate_verdict(records(0.0, -0.006))["passed"] is False  # best IoU alone fails it
    verdict = gate_verdict(records(0.0, 0.0))
    values = np.array(agreement[:3] * len(base))
    assert verdict["masks"] == values.size
    assert verdict["agreement_dice"]["p1"] == pytest.approx(np.percentile(values, 1))
    assert verdict["agreement_dice"]["share_ge_0.95"] == pytest.approx((values >= 0.95).mean())
    both = precision_gate({"box": records(0.0, 0.0), "points-putz": records(0.01, 0.0)})
    assert both["passed"] is False and both["protocols"]["box"]["passed"] is True


@pytest.mark.skipif(not HAS_BF16_BACKEND, reason="needs native bf16 (AVX-512 BF16 / AMX) and openvino")
def test_bf16_runs_on_openvino_and_gets_a_verdict_per_protocol(reference, tmp_path):
    """Whether bf16 passes is measured on all 110 demo slices (bench/README.md: it passes), not on
    this sample of 2: the gate's verdict per protocol must follow its thresholds, and bf16 must
    really be reduced yet close to fp32."""
    bf16 = Predictor("litemedsam", precision="bf16", threads=2)
    assert bf16.choice.backend == "openvino"  # the fastest native bf16 on the CPU
    assert bf16.describe()["precision"] == "bf16" and bf16.backend.info.split_decoder
    protocols = ("box", "points-putz")
    gate = gate_of(bf16, reference, tmp_path, protocols, cases=2)
    assert set(gate["protocols"]) == set(protocols)
    for verdict in gate["protocols"].values():
        within = max(abs(verdict["delta_mean_dice"]), abs(verdict["delta_mean_best_iou"])) <= 0.005
        assert verdict["passed"] is within and verdict["slices"] == 2
        assert 0.9 < verdict["agreement_dice"]["mean"] < 1.0  # reduced, not another segmentation
    assert gate["passed"] is all(v["passed"] for v in gate["protocols"].values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precisions_go_through_the_same_gate(tmp_path, precision):
    reference = Predictor("litemedsam", backend="torch", device="cuda", precision="fp32")
    candidate = Predictor("litemedsam", device="cuda", precision=precision)
    assert candidate.choice.backend == "torch" and candidate.describe()["precision"] == precision
    gate = gate_of(candidate, reference, tmp_path, ("box", "points-putz"), cases=2)
    assert set(gate["protocols"]) == {"box", "points-putz"}
    assert gate["passed"], gate["protocols"]


def test_a_cpu_without_native_bf16_is_refused_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(InputError, match="no native bf16"):
        precision_module.resolve(None, "cpu", "bf16")
    with pytest.raises(InputError, match="native bf16"):
        Predictor("tiny_vit_test", backend="torch", precision="bf16")
    result = CliRunner().invoke(app, ["bench", "brats", "--model", "tiny_vit_test", "--random-weights",
                                      "--precision", "bf16", "--cases", "1"])  # fmt: skip
    assert result.exit_code == 2 and "no native bf16" in result.output and "Traceback" not in result.output


def test_int8_and_unnative_backends_are_refused(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    with pytest.raises(InputError, match="passes the task accuracy gate"):
        precision_module.resolve(None, "cpu", "int8")
    with pytest.raises(InputError, match="no native bf16 on cpu; bf16 runs on openvino or torch"):
        precision_module.resolve("onnxruntime", "cpu", "bf16")
    with pytest.raises(InputError, match="needs a CUDA GPU"):
        precision_module.resolve(None, "cpu", "fp16")
    with pytest.raises(InputError, match="unknown"):
        precision_module.resolve(None, "cpu", "fp8")
    assert precision_module.resolve("torch", "cpu", "bf16").backend == "torch"


def configuration(backend, precision, encoder_ms, click_ms, passed):
    return {"backend": backend, "precision": precision, "device": "cpu", "encoder_ms": encoder_ms,
            "click_ms": click_ms, "passed": passed}  # fmt: skip


def write_test_profile(configurations, model="tiny_vit_test", machine=None):
    profile = {
        "schema": 1,
        "model": model,
        "machine": machine or this_machine(),
        "configurations": configurations,
    }
    return write_profile(profile)


def test_auto_picks_the_fastest_passing_configuration_and_falls_back_to_fp32(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMFAST_CACHE", str(tmp_path))
    messages = []
    fallback = precision_module.resolve(
        None, "cpu", "auto", load_profile(), log=messages.append, model="tiny_vit_test"
    )
    assert (fallback.backend, fallback.precision, fallback.source) == ("onnxruntime", "fp32", "fallback")
    assert messages and "samfast tune" in messages[0]
    configurations = [
        configuration("torch", "fp32", 1200, 56, True),
        configuration("onnxruntime", "fp32", 530, 18, True),
        configuration("openvino", "bf16", 290, 13, False),  # fastest, but failed the gate
        configuration("torch", "bf16", 700, 40, True),
    ]
    path = write_test_profile(configurations)
    assert path == profile_path() and json.loads(path.read_text())["model"] == "tiny_vit_test"
    chosen = precision_module.resolve(None, "cpu", "auto", load_profile(), model="tiny_vit_test")
    assert (chosen.backend, chosen.precision, chosen.source) == ("onnxruntime", "fp32", "profile")
    restricted = precision_module.resolve("torch", "cpu", "auto", load_profile(), model="tiny_vit_test")
    assert (restricted.backend, restricted.precision) == ("torch", "bf16")  # fastest passing on torch
    configurations[2]["passed"] = True
    write_test_profile(configurations)
    assert pick(load_profile(), "cpu", model="tiny_vit_test")["backend"] == "openvino"
    assert pick(load_profile(), "cuda", model="tiny_vit_test") is None
    # A Predictor handed the profile takes its pick; naming a backend or precision overrides it. The
    # command line reads the profile only where it decides something; a Predictor never reads it.
    write_test_profile(
        [configuration("torch", "fp32", 1, 1, True), configuration("onnxruntime", "fp32", 5, 5, True)]
    )
    assert machine_profile(None, None) == load_profile() and machine_profile("torch", None) is None
    default = Predictor("tiny_vit_test", random_weights=True, profile=machine_profile(None, None))
    assert (default.choice.source, default.describe()["backend"]) == ("profile", "torch")
    given = Predictor("tiny_vit_test", random_weights=True, precision="fp32", profile=load_profile())
    assert given.choice.source == "given" and given.choice.backend == "onnxruntime"
    unaware = Predictor("tiny_vit_test", random_weights=True)
    assert (unaware.choice.backend, unaware.choice.precision) == ("onnxruntime", "fp32")
    # A profile of another model, of another CPU or a corrupt one is not used.
    assert (
        precision_module.resolve(None, "cpu", None, load_profile(), model="litemedsam").source == "fallback"
    )
    write_test_profile(configurations, machine=this_machine() | {"cpu_model": "another CPU"})
    assert load_profile() is None
    profile_path().write_text("{not json")
    assert (
        precision_module.resolve(None, "cpu", "auto", load_profile(), model="tiny_vit_test").source
        == "fallback"
    )


def test_tune_writes_a_profile_that_info_shows_and_auto_uses(tmp_path, monkeypatch):
    """`samfast tune` end to end on one configuration besides the reference (timing only: fp32)."""
    import samfast.eval.tuning

    monkeypatch.setenv("SAMFAST_CACHE", str(tmp_path))
    monkeypatch.setattr(samfast.eval.tuning, "candidates", lambda device: [("onnxruntime", "fp32")])
    tiny = ["--model", "tiny_vit_test", "--random-weights"]
    result = CliRunner().invoke(app, ["tune", "--slices", "1", "--rounds", "1", *tiny])
    assert result.exit_code == 0, result.output
    profile = json.loads(profile_path().read_text())  # read back by the JSON parser, not our loader
    assert profile["machine"]["cpu_model"] == cpu.cpu_model()
    assert [(c["backend"], c["precision"]) for c in profile["configurations"]] == [
        ("torch", "fp32"),
        ("onnxruntime", "fp32"),
    ]
    for c in profile["configurations"]:
        assert c["encoder_ms"] > 0 and c["click_ms"] > 0 and c["passed"] is True
    assert profile["configurations"][0]["encoder_speedup_vs_torch_fp32"] == 1.0
    assert profile["choice"] in (
        {"backend": "torch", "precision": "fp32"},
        {"backend": "onnxruntime", "precision": "fp32"},
    )
    info = CliRunner().invoke(app, ["info", "--json"])
    shown = json.loads(info.output)["profile"]
    assert shown["found"] is True and shown["choice"] == profile["choice"]
    auto = precision_module.resolve(None, "cpu", "auto", load_profile(), model="tiny_vit_test")
    assert {"backend": auto.backend, "precision": auto.precision} == profile["choice"]
