"""TorchScript sets: files torch.jit.load reads with their metadata, graphs that stay dynamic in the
slice, prompt and point axes, and parity with the PyTorch fp32 reference on real BraTS slices.

tiny_vit_test (random weights) checks the plumbing fast; LiteMedSAM is traced once for the module.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import CASES, tumour_slices

import samfast
from samfast.backends.base import Backend, Prompts
from samfast.backends.torch_backend import TorchBackend
from samfast.backends.torchscript_backend import TorchScriptBackend
from samfast.errors import InputError
from samfast.eval.parity import compare_predictors, tolerance_for
from samfast.export.torchscript_export import METADATA_FILE, write_torchscript
from samfast.export.wrappers import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    DecoderForExport,
    EncoderForExport,
)
from samfast.models import build_model
from samfast.preprocess import normalize_mr_putz
from samfast.runtime.predictor import Predictor

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

SLICES_PER_CASE = 2
ATOL = 1e-4


def _export(tmp_path_factory, name: str, random_weights: bool):
    model = build_model(name, random_weights=random_weights)
    folder = tmp_path_factory.mktemp(f"torchscript-{name}")
    fragment = write_torchscript(model, folder, log=lambda _: None)
    return model, folder, fragment


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _export(tmp_path_factory, "tiny_vit_test", random_weights=True)


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    return _export(tmp_path_factory, "litemedsam", random_weights=False)


def _load(path):
    extra = {METADATA_FILE: ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    return module, json.loads(extra[METADATA_FILE])


def _decoder_inputs(spec, prompts: int, points: int, has_mask: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    channels, height, width = spec.embedding_shape
    low = spec.low_res_size
    return (
        torch.randn(1, channels, height, width, generator=gen),
        torch.rand(prompts, points, 2, generator=gen) * spec.input_size,
        torch.randint(-1, 4, (prompts, points), generator=gen).float(),  # pad, bg, fg, box corners
        torch.randn(prompts, 1, low, low, generator=gen),
        torch.tensor([1.0 if has_mask else 0.0]),
    )


# -- files and metadata --------------------------------------------------------------------------


def test_fragment_names_files_inputs_outputs_and_dynamic_axes(tiny):
    _, folder, fragment = tiny
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.pt", "encoder.pt"]
    assert fragment["encoder"] | {"dynamic_axes": None} == {
        "file": "encoder.pt",
        "inputs": ENCODER_INPUTS,
        "outputs": ENCODER_OUTPUTS,
        "dynamic_axes": None,
    }
    assert fragment["decoder"]["file"] == "decoder.pt"
    assert fragment["decoder"]["inputs"] == DECODER_INPUTS
    assert fragment["decoder"]["outputs"] == DECODER_OUTPUTS
    assert fragment["encoder"]["dynamic_axes"]["images"] == {0: "slices"}
    assert fragment["decoder"]["dynamic_axes"]["point_coords"] == {0: "prompts", 1: "points"}


@pytest.mark.parametrize("graph", ["encoder", "decoder"])
def test_files_load_and_carry_metadata_that_says_random_weights(tiny, graph):
    model, folder, fragment = tiny
    module, meta = _load(folder / f"{graph}.pt")
    assert isinstance(module, torch.jit.ScriptModule)
    assert meta["model"] == "tiny_vit_test"
    assert meta["weights"] == model.samfast_weights.label
    assert "RANDOM WEIGHTS" in meta["weights"]
    assert meta["samfast_version"] == samfast.__version__
    assert meta["graph"] == graph
    assert meta["inputs"] == fragment[graph]["inputs"]
    assert meta["outputs"] == fragment[graph]["outputs"]


def test_real_weights_are_named_by_hash_and_decoder_holds_no_image_encoder(lite):
    model, folder, _ = lite
    for graph in ("encoder", "decoder"):
        _, meta = _load(folder / f"{graph}.pt")
        assert meta["weights"] == model.samfast_weights.label
        assert meta["weights"].startswith("sha256:")
    decoder, _ = _load(folder / "decoder.pt")
    names = [name for name, _ in decoder.named_parameters()]
    assert names and not any("image_encoder" in name for name in names)


def test_graphs_are_plain_torchscript_pinned_to_no_device(lite):
    """No Python ops (LibTorch could not run them) and no Device constant: a traced
    torch.ones(..., device=cpu) would break the file on CUDA."""
    _, folder, _ = lite
    for graph in ("encoder", "decoder"):
        module, _ = _load(folder / f"{graph}.pt")
        nodes = list(module.inlined_graph.nodes())
        assert not [n for n in nodes if n.kind() == "prim::PythonOp"], graph
        pinned = [n for n in nodes if n.kind() == "prim::Constant" and "Device" in str(n)]
        assert not pinned, (graph, [str(n) for n in pinned])


# -- traced graphs stay dynamic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "batches"), [("tiny", (1, 3)), ("lite", (3,))], ids=["tiny_vit_test", "litemedsam"]
)
def test_encoder_matches_eager_at_other_slice_batches(request, which, batches):
    model, folder, _ = request.getfixturevalue(which)
    traced, _ = _load(folder / "encoder.pt")
    eager = EncoderForExport(model).eval()
    size = model.samfast_spec.input_size
    with torch.no_grad():
        for batch in batches:
            images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
            want, got = eager(images), traced(images)
            assert got.shape == (batch, *model.samfast_spec.embedding_shape)
            torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-3)


# (prompts, points, has_mask): every prompt count 1, 5 meets every point count 1, 2, 4 on the tiny
# model; LiteMedSAM's slower decoder gets a covering subset.
_ALL_COMBINATIONS = [(b, n, m) for b in (1, 5) for n in (1, 2, 4) for m in (False, True)]
_COVERING = [(1, 1, False), (5, 2, True), (1, 4, True), (5, 4, False)]


@pytest.mark.parametrize(("which", "cases"), [("tiny", _ALL_COMBINATIONS), ("lite", _COVERING)])
def test_decoder_matches_eager_at_other_prompt_and_point_counts(request, which, cases):
    model, folder, _ = request.getfixturevalue(which)
    spec = model.samfast_spec
    low = spec.low_res_size
    traced, _ = _load(folder / "decoder.pt")
    eager = DecoderForExport(model).eval()
    with torch.no_grad():
        for prompts, points, has_mask in cases:
            inputs = _decoder_inputs(spec, prompts, points, has_mask, seed=10 * prompts + points)
            (want_iou, want_masks), (got_iou, got_masks) = eager(*inputs), traced(*inputs)
            assert got_masks.shape == (prompts, 4, low, low)
            assert got_iou.shape == (prompts, 4)
            torch.testing.assert_close(got_masks, want_masks, atol=ATOL, rtol=1e-3)
            torch.testing.assert_close(got_iou, want_iou, atol=ATOL, rtol=1e-3)


# -- backend -------------------------------------------------------------------------------------


def test_backend_follows_the_protocol(tiny):
    model, folder, _ = tiny
    spec = model.samfast_spec
    backend = TorchScriptBackend(folder, spec.low_res_size)
    assert isinstance(backend, Backend) and backend.name == "torchscript"
    embedding = backend.encode(np.zeros((2, 3, spec.input_size, spec.input_size), np.float32))
    assert embedding.shape == (2, *spec.embedding_shape) and embedding.dtype == np.float32
    prompts = Prompts(
        point_coords=np.full((3, 1, 2), 10.0, np.float32),
        point_labels=np.ones((3, 1), np.float32),
        boxes=np.tile(np.array([[5.0, 5.0, 60.0, 70.0]], np.float32), (3, 1)),
    )
    masks, iou = backend.decode(embedding[:1], prompts)
    low = spec.low_res_size
    assert masks.shape == (3, 4, low, low) and iou.shape == (3, 4)
    assert masks.dtype == np.float32 and iou.dtype == np.float32
    described = backend.describe()
    assert described["backend"] == "torchscript"
    assert described["device"] == "cpu" and described["precision"] == "fp32"
    assert described["artifacts"] == str(folder)


@pytest.fixture(scope="module")
def parity_report(lite, demo_cases):
    model, folder, _ = lite
    spec, weights = model.samfast_spec, model.samfast_weights
    reference = Predictor.from_backend(spec.name, weights, TorchBackend(model))
    candidate = Predictor.from_backend(spec.name, weights, TorchScriptBackend(folder, spec.low_res_size))
    slices = []
    for case in CASES:
        volume, label = demo_cases[case]
        scaled = normalize_mr_putz(volume)
        slices += [(scaled[z], label[z]) for z in tumour_slices(label, SLICES_PER_CASE)]
    return compare_predictors(reference, candidate, slices, "torchscript", "fp32")


def test_torchscript_matches_torch_reference_on_real_slices(parity_report):
    summary = parity_report.summary()
    assert parity_report.passed, summary
    # 4 prompt sets (1 + 3 + 3 + 3 masks), each also with mask feedback, on 2 slices of 2 cases
    assert summary["prompts"] == len(CASES) * SLICES_PER_CASE * 10 * 2
    assert tolerance_for("torchscript", "fp32").min_mask_dice == 0.999
    assert min(parity_report.mask_dice) >= 0.999, summary
    assert max(parity_report.iou_delta) <= 1e-3, summary
    for name, error in parity_report.outputs.items():
        assert error.within_tolerance, (name, error)


# -- errors --------------------------------------------------------------------------------------


def test_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        TorchScriptBackend(tmp_path / "nowhere", 32)


@pytest.mark.parametrize("missing", ["encoder.pt", "decoder.pt"])
def test_missing_file_is_an_input_error_naming_it(tiny, tmp_path, missing):
    _, folder, _ = tiny
    for name in ("encoder.pt", "decoder.pt"):
        if name != missing:
            shutil.copy(folder / name, tmp_path / name)
    with pytest.raises(InputError, match=missing):
        TorchScriptBackend(tmp_path, 32)


def test_corrupt_file_is_an_input_error(tiny, tmp_path):
    _, folder, _ = tiny
    shutil.copy(folder / "encoder.pt", tmp_path / "encoder.pt")
    (tmp_path / "decoder.pt").write_bytes(b"not a zip archive")
    with pytest.raises(InputError, match="decoder.pt"):
        TorchScriptBackend(tmp_path, 32)


def test_wrong_low_res_size_is_an_input_error(tiny):
    _, folder, _ = tiny
    with pytest.raises(InputError, match="low-res size 32"):
        TorchScriptBackend(folder, 256)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cpu_is_an_input_error(tiny, precision):
    _, folder, _ = tiny
    with pytest.raises(InputError, match="CUDA"):
        TorchScriptBackend(folder, 32, device="cpu", precision=precision)


@pytest.mark.parametrize(("device", "precision"), [("warp-drive", "fp32"), ("meta", "fp32"), ("cpu", "int3")])
def test_unknown_device_or_precision_is_an_input_error(tiny, device, precision):
    _, folder, _ = tiny
    with pytest.raises(InputError):
        TorchScriptBackend(folder, 32, device=device, precision=precision)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_an_input_error(tiny):
    _, folder, _ = tiny
    with pytest.raises(InputError, match="no CUDA GPU"):
        TorchScriptBackend(folder, 32, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_runs_the_cpu_traced_files(lite, precision):
    model, folder, _ = lite
    spec = model.samfast_spec
    backend = TorchScriptBackend(folder, spec.low_res_size, device="cuda", precision=precision)
    cpu = TorchScriptBackend(folder, spec.low_res_size)
    images = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    embedding = backend.encode(images)
    prompts = Prompts(boxes=np.array([[40.0, 50.0, 180.0, 200.0]], np.float32))
    masks, iou = backend.decode(embedding, prompts)
    ref_masks, ref_iou = cpu.decode(cpu.encode(images), prompts)
    tol = 1e-3 if precision == "fp32" else 5e-2
    assert np.abs(iou - ref_iou).max() <= tol
    assert ((masks > 0) == (ref_masks > 0)).mean() > 0.99


# -- LibTorch C++ ----------------------------------------------------------------------------------

_CPP_LOADER = r"""
#include <torch/script.h>
#include <iostream>
int main(int argc, char** argv) {
  torch::NoGradGuard no_grad;
  std::string folder = argv[1];
  int64_t size = std::stoll(argv[2]), low = std::stoll(argv[3]);
  std::unordered_map<std::string, std::string> extra{{"samfast.json", ""}};
  auto encoder = torch::jit::load(folder + "/encoder.pt", torch::kCPU, extra);
  auto decoder = torch::jit::load(folder + "/decoder.pt");
  auto images = torch::linspace(-1, 1, 3 * 3 * size * size).reshape({3, 3, size, size});
  auto embeddings = encoder.forward({images}).toTensor();
  auto coords = torch::arange(20, torch::kFloat).reshape({5, 2, 2}) * 3;
  auto labels = torch::tensor({2.0f, 3.0f}).repeat({5, 1});
  auto out = decoder.forward({embeddings.slice(0, 1, 2), coords, labels, torch::zeros({5, 1, low, low}),
                              torch::tensor({0.0f})}).toTuple();
  auto iou = out->elements()[0].toTensor(), masks = out->elements()[1].toTensor();
  std::cout << (extra["samfast.json"].find("\"model\"") != std::string::npos) << " "
            << embeddings.size(0) << " " << masks.size(0) << " " << masks.size(1) << " " << masks.size(2)
            << " " << embeddings.sum().item<double>() << " " << iou.sum().item<double>() << std::endl;
}
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None, reason="needs a C++20 compiler")
def test_libtorch_cpp_loads_and_runs_the_files(tiny, tmp_path):
    """The files need nothing from Python: a C++ program linked against LibTorch (the copy inside
    the torch wheel) loads both, reads the metadata and runs other batch sizes than traced."""
    from torch.utils.cpp_extension import include_paths, library_paths

    model, folder, _ = tiny
    spec = model.samfast_spec
    source, binary = tmp_path / "load.cpp", tmp_path / "load"
    source.write_text(_CPP_LOADER)
    libs = library_paths()
    command = ["c++", "-std=c++20", "-O0", str(source), "-o", str(binary)]
    command += [f"-I{p}" for p in include_paths()] + [f"-L{p}" for p in libs]
    command += ["-ltorch", "-ltorch_cpu", "-lc10"] + [f"-Wl,-rpath,{p}" for p in libs]
    built = subprocess.run(command, capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot build against LibTorch here: {built.stderr.strip().splitlines()[-1:]}")
    ran = subprocess.run(
        [str(binary), str(folder), str(spec.input_size), str(spec.low_res_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    has_meta, slices, prompts, tokens, low, embedding_sum, iou_sum = ran.stdout.split()
    assert (has_meta, slices, prompts, tokens, low) == ("1", "3", "5", "4", str(spec.low_res_size))
    size = spec.input_size
    images = torch.linspace(-1, 1, 3 * 3 * size * size).reshape(3, 3, size, size)
    coords = torch.arange(20, dtype=torch.float32).reshape(5, 2, 2) * 3
    labels = torch.tensor([2.0, 3.0]).repeat(5, 1)
    with torch.no_grad():
        embeddings = EncoderForExport(model).eval()(images)
        low_res = spec.low_res_size
        iou, _ = DecoderForExport(model).eval()(
            embeddings[1:2], coords, labels, torch.zeros(5, 1, low_res, low_res), torch.tensor([0.0])
        )
    assert float(embedding_sum) == pytest.approx(float(embeddings.sum()), rel=1e-3, abs=1e-2)
    assert float(iou_sum) == pytest.approx(float(iou.sum()), rel=1e-3, abs=1e-3)
