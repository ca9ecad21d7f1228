"""`samfast export`: verified ONNX/TorchScript sets on a CPU machine, engines skipped in one line,
and clear refusals (exit 2) or a parity failure (exit 1) that leave no artifact behind."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from samfast.artifacts.formats import EXPORT_FORMATS
from samfast.artifacts.gpu import tensorrt_available
from samfast.cli import app
from samfast.export.exporter import plan
from samfast.export.set_writer import ParityFailure, build_set
from samfast.models import get_spec, resolve_weights
from samfast.models.checkpoints import packaged_checkpoint

NO_TENSORRT = not tensorrt_available()[0]


def run(*args):
    return CliRunner().invoke(app, ["export", *map(str, args)], env={"COLUMNS": "200"})


def assert_refused(result, *words):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def litemedsam_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return out, run("--model", "litemedsam", "--format", "all", "--out", out)


def test_list_prints_the_format_table():
    result = run("--list")
    assert result.exit_code == 0
    for fmt in EXPORT_FORMATS.values():
        assert fmt.name in result.stdout and fmt.suffix in result.stdout


@pytest.mark.skipif(not NO_TENSORRT, reason="this checks the CPU-only behaviour")
def test_all_formats_on_cpu_write_onnx_and_torchscript_and_skip_engines_in_one_line(litemedsam_all):
    out, result = litemedsam_all
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stdout.splitlines() if line.startswith("engine-")]
    assert len(skipped) == 1 and "needs a CUDA GPU and TensorRT" in skipped[0]
    root = out / "litemedsam" / resolve_weights("litemedsam").tag
    # (beside each set, its hidden lock file: the lock export and first runs take)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "onnx-fp32",
        "torchscript-fp32",
    ]


@pytest.mark.parametrize(
    ("folder", "files", "backend"),
    [
        (
            "onnx-fp32",
            {"encoder.onnx", "decoder.onnx", "decoder_image.onnx", "decoder_prompt.onnx"},
            "onnxruntime",
        ),
        ("torchscript-fp32", {"encoder.pt", "decoder.pt"}, "torchscript"),
    ],
)
def test_each_set_has_a_manifest_with_hashes_versions_and_a_passing_parity_report(
    litemedsam_all, folder, files, backend
):
    out, _ = litemedsam_all
    manifest = json.loads(
        (out / "litemedsam" / resolve_weights("litemedsam").tag / folder / "manifest.json").read_text()
    )
    assert set(manifest["files"]) == files
    assert manifest["weights"]["sha256"] == get_spec("litemedsam").checkpoint_sha256
    assert manifest["versions"]["torch"] and manifest["versions"]["samfast"]
    assert manifest["encoder"]["inputs"] == ["images"]
    parity = manifest["parity"]
    assert parity["passed"] and parity["backend"] == backend
    assert parity["min_mask_dice"] >= 0.999 and parity["max_iou_delta"] <= 1e-3
    assert parity["prompts"] >= 40 and parity["slices"] == 4


def test_exported_sets_are_what_the_runtime_backends_load(litemedsam_all):
    from samfast import Predictor

    out, _ = litemedsam_all
    for backend in ("onnxruntime", "torchscript"):
        messages: list[str] = []
        predictor = Predictor("litemedsam", backend=backend, engine_dir=out, log=messages.append)
        assert messages == [], messages  # reused, not rebuilt
        assert str(out) in str(predictor.backend.describe())


@pytest.mark.skipif(not NO_TENSORRT, reason="this checks the CPU-only behaviour")
def test_asking_only_for_engines_without_tensorrt_is_exit_2(tmp_path):
    result = run("--model", "litemedsam", "--format", "engine", "--precision", "fp16", "--out", tmp_path)
    assert_refused(result, "engine", "TensorRT")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--model", "litemedsam", "--format", "onnx", "--precision", "fp16"), ("onnx", "fp16")),
        (("--model", "litemedsam", "--format", "coreml"), ("unknown format",)),
        (("--model", "vit_x", "--format", "onnx"), ("unknown model",)),
        (("--format", "onnx"), ("--model",)),
        (("--model", "vit_h", "--format", "onnx"), ("sam_vit_h_4b8939.pth", "sha256")),
    ],
)
def test_bad_requests_are_refused_with_one_line(tmp_path, args, words):
    assert_refused(run(*args, "--out", tmp_path / "out"), *words)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").rglob("*.onnx")) == []


def test_checkpoint_of_another_model_names_the_mismatching_tensors(tmp_path):
    lite = packaged_checkpoint(get_spec("litemedsam"))
    result = run("--model", "vit_b", "--checkpoint", lite, "--format", "onnx", "--out", tmp_path)
    assert_refused(result, "litemedsam checkpoint", "tensors fit", "missing", "image_encoder.pos_embed")


def test_unwritable_output_folder_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run("--model", "tiny_vit_test", "--format", "onnx", "--out", blocker / "engines")
    assert_refused(result, "cannot write there")


def test_failed_parity_leaves_nothing_that_looks_like_an_export(tmp_path):
    target = tmp_path / "onnx-fp32"

    def writer(folder):
        (folder / "encoder.onnx").write_bytes(b"graph")
        return {}

    with pytest.raises(ParityFailure, match="parity check failed"):
        build_set(
            target,
            get_spec("tiny_vit_test"),
            resolve_weights("tiny_vit_test"),
            "onnx",
            "fp32",
            17,
            writer,
            verify=lambda folder: {"passed": False, "outputs": {}},
        )
    assert list(tmp_path.iterdir()) == []


def test_all_with_fp16_skips_the_formats_without_fp16_and_naming_one_is_an_error():
    if NO_TENSORRT:
        with pytest.raises(Exception, match="nothing to export"):
            plan(["all"], "fp16")
    planned = {p.fmt: p.skip_reason for p in plan(["all"], "fp32")} if not NO_TENSORRT else {}
    assert all(reason is None for reason in planned.values())
    with pytest.raises(Exception, match="offers precision fp32, not fp16"):
        plan(["torchscript"], "fp16")


@pytest.mark.slow
def test_vit_b_random_weights_exports_to_onnx_with_parity(tmp_path):
    result = run("--model", "vit_b", "--random-weights", "--format", "onnx", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.stdout
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    assert manifest["weights"]["random"] and manifest["parity"]["passed"]


def test_graphs_past_the_size_threshold_keep_their_tensors_in_one_data_file_and_pass_parity(
    tmp_path, monkeypatch
):
    """ViT-H's branch at the tiny model's size: every graph past the (lowered) threshold is written as
    a small .onnx plus one .data file, listed and hashed in the manifest, and the parity check loads
    the sets from those files."""
    import onnx

    from samfast.export import onnx_export

    monkeypatch.setattr(onnx_export, "_EXTERNAL_DATA_THRESHOLD", 0)
    result = run("--model", "tiny_vit_test", "--random-weights", "--format", "onnx", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    folder = next(tmp_path.rglob("manifest.json")).parent
    manifest = json.loads((folder / "manifest.json").read_text())
    graphs = {"encoder.onnx", "decoder.onnx", "decoder_image.onnx", "decoder_prompt.onnx"}
    assert set(manifest["files"]) == graphs | {f"{g}.data" for g in graphs}
    assert manifest["parity"]["passed"]
    for graph in graphs:
        proto = onnx.load(str(folder / graph), load_external_data=False)
        locations = {
            entry.value
            for tensor in proto.graph.initializer
            if tensor.data_location == onnx.TensorProto.EXTERNAL
            for entry in tensor.external_data
            if entry.key == "location"
        }
        assert locations == {f"{graph}.data"}, graph
        onnx.checker.check_model(str(folder / graph))


@pytest.mark.slow
def test_vit_h_random_weights_exports_to_onnx_with_one_external_data_file(tmp_path):
    """ViT-H's encoder passes protobuf's 2 GiB limit: its tensors go to one .data file."""
    import onnx

    result = run("--model", "vit_h", "--random-weights", "--format", "onnx", "--no-verify", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "vit_h" / "random-seed0" / "onnx-fp32"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        "encoder.onnx",
        "encoder.onnx.data",
        "decoder.onnx",
        "decoder_image.onnx",
        "decoder_prompt.onnx",
    }
    assert manifest["files"]["encoder.onnx.data"]["bytes"] > 2**31
    assert manifest["files"]["encoder.onnx"]["bytes"] < 10 * 2**20
    onnx.checker.check_model(str(folder / "encoder.onnx"))
