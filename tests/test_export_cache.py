"""The engines/ cache: ONNX exports with a manifest, reused while valid, rebuilt when not.

An interrupted export leaves nothing that looks like a finished set.
"""

from __future__ import annotations

import json

import onnx
import pytest

from samfast.artifacts.graphs import ENCODER_GRAPH
from samfast.artifacts.manifest import read_manifest
from samfast.export.cache import ensure_onnx, onnx_dir
from samfast.export.onnx_export import export_onnx
from samfast.models import build_model, resolve_weights
from samfast.models.checkpoints import sha256_file

MODEL = "tiny_vit_test"


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "engines"


def _build(cache, messages=None):
    log = messages.append if messages is not None else (lambda m: None)
    return ensure_onnx(MODEL, resolve_weights(MODEL), cache, log=log)


def test_first_build_says_what_it_does_and_writes_a_complete_manifest(cache):
    messages: list[str] = []
    folder = _build(cache, messages)
    assert folder == onnx_dir(MODEL, resolve_weights(MODEL), cache)
    assert any("building onnx" in m and "no manifest yet" in m for m in messages)
    manifest = read_manifest(folder)
    assert manifest["model"] == MODEL and manifest["format"] == "onnx" and manifest["opset"] == 17
    assert manifest["weights"]["random"] is True and "RANDOM" in manifest["weights"]["label"]
    assert set(manifest["files"]) == {
        "encoder.onnx",
        "decoder.onnx",
        "decoder_image.onnx",
        "decoder_prompt.onnx",
    }
    for name, entry in manifest["files"].items():
        assert sha256_file(folder / name) == entry["sha256"]
    for key in ("samfast", "torch", "onnx", "onnxruntime"):
        assert manifest["versions"][key]
    assert manifest["decoder"]["inputs"] == [
        "image_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
    ]


def test_onnx_files_carry_metadata_and_named_dynamic_axes(cache):
    folder = _build(cache)
    encoder = onnx.load(str(folder / "encoder.onnx"))
    props = {p.key: p.value for p in encoder.metadata_props}
    assert props["model"] == MODEL and "RANDOM WEIGHTS" in props["weights"]
    assert encoder.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "slices"
    decoder = onnx.load(str(folder / "decoder.onnx"))
    coords = next(i for i in decoder.graph.input if i.name == "point_coords")
    assert [d.dim_param for d in coords.type.tensor_type.shape.dim[:2]] == ["prompts", "points"]


def test_valid_cache_is_reused_without_rebuilding(cache):
    folder = _build(cache)
    before = (folder / "encoder.onnx").stat().st_mtime_ns
    messages: list[str] = []
    assert _build(cache, messages) == folder
    assert messages == []
    assert (folder / "encoder.onnx").stat().st_mtime_ns == before


def test_corrupted_file_triggers_a_rebuild(cache):
    folder = _build(cache)
    with open(folder / "decoder.onnx", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    messages: list[str] = []
    _build(cache, messages)
    assert any("decoder.onnx does not match its sha256" in m for m in messages)
    assert read_manifest(folder)["files"]["decoder.onnx"]["sha256"] == sha256_file(folder / "decoder.onnx")


def test_manifest_for_other_settings_triggers_a_rebuild(cache):
    folder = _build(cache)
    manifest = read_manifest(folder)
    manifest["opset"] = 16
    (folder / "manifest.json").write_text(json.dumps(manifest))
    messages: list[str] = []
    _build(cache, messages)
    assert any("manifest opset is 16" in m for m in messages)


def test_a_set_with_an_older_encoder_graph_is_rebuilt(cache):
    folder = _build(cache)
    manifest = read_manifest(folder)
    assert manifest["encoder_graph"] == ENCODER_GRAPH
    manifest["encoder_graph"] = 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    messages: list[str] = []
    _build(cache, messages)
    assert any("building onnx" in m and "encoder_graph" in m for m in messages)
    assert read_manifest(folder)["encoder_graph"] == ENCODER_GRAPH


def test_litemedsam_encoder_graph_has_separate_q_k_v_and_no_split():
    import torch

    from samfast.export.wrappers import EncoderForExport

    folder = ensure_onnx("litemedsam", resolve_weights("litemedsam"), log=lambda m: None)  # session cache
    graph = onnx.load(str(folder / "encoder.onnx")).graph
    assert not [n for n in graph.node if n.op_type in ("Split", "VariadicSplit")]
    model = build_model("litemedsam")
    plain, rewritten = EncoderForExport(model).eval(), EncoderForExport(model, separate_qkv=True).eval()
    attention = [m for m in rewritten.modules() if type(m).__name__ == "Attention"]
    assert attention and all(not hasattr(m, "qkv") and len(m.separate_qkv) == 3 for m in attention)
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = plain(images), rewritten(images)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), float((got - expected).abs().max())
    assert any(hasattr(m, "qkv") for m in plain.modules())  # the registry model is untouched


def test_interrupted_export_leaves_no_set_behind(tmp_path):
    target = tmp_path / "set"

    def interrupt(message: str) -> None:
        if "decoder" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_onnx(build_model(MODEL), target, log=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_litemedsam_encoder_graph_keeps_its_local_convolutions_channels_last():
    import torch

    from samfast.export.wrappers import EncoderForExport

    folder = ensure_onnx("litemedsam", resolve_weights("litemedsam"), log=lambda m: None)  # session cache
    graph = onnx.load(str(folder / "encoder.onnx")).graph
    perms = [
        tuple(a.ints) for n in graph.node if n.op_type == "Transpose" for a in n.attribute if a.name == "perm"
    ]
    assert (0, 2, 1) not in perms  # no tokens <-> (B, C, L) transposes around the convolutions
    assert perms.count((0, 3, 1, 2)) >= 10 and perms.count((0, 2, 3, 1)) >= 10
    model = build_model("litemedsam")
    plain = EncoderForExport(model).eval()
    rewritten = EncoderForExport(model, separate_qkv=True, channels_last=True).eval()
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = plain(images), rewritten(images)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), float((got - expected).abs().max())
