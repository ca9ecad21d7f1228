"""Every backend keeps one contract (samfast.backends.base.Backend) and says what it can do in a
typed BackendInfo; nothing outside samfast/backends/ discovers a backend's abilities by probing.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from samfast import Predictor
from samfast.backends import Backend, BackendInfo, Prompts
from samfast.backends.base import info_fields

PACKAGE = Path(__file__).resolve().parents[1] / "samfast"
CONTRACT = ("encode", "decode", "decode_rows", "release", "describe")
# Names a capability probe would ask about: the contract, the info, and what some backends add.
BACKEND_NAMES = frozenset(
    {*CONTRACT, "info", "name", *(f.name for f in dataclasses.fields(BackendInfo))}
    | {"encode_tensor", "decode_batched", "decode_full", "image_state", "decode_state", "splits_decoder"}
)


def probes(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, call) of each hasattr/getattr that asks an object about a backend ability: its
    attribute name is one of a backend's, or the object is spelled with "backend"."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id not in ("hasattr", "getattr") or len(node.args) < 2:
            continue
        target, attribute = node.args[0], node.args[1]
        asks = isinstance(attribute, ast.Constant) and attribute.value in BACKEND_NAMES
        if asks or "backend" in ast.unparse(target).lower():
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_probe_finder_flags_capability_probes_and_passes_unrelated_getattr():
    flagged = probes(
        "ok = hasattr(self.backend, 'decode_rows')\n"
        "cuda = hasattr(model, 'encode_tensor')\n"
        "close = getattr(engine, 'release', None)\n"
        "what = getattr(my_backend, 'anything')\n"
    )
    assert [line for line, _ in flagged] == [1, 2, 3, 4]
    assert probes("text = getattr(ds, 'SeriesDescription', '')\nhasattr(os, 'sched_getaffinity')\n") == []


def test_nothing_outside_the_backends_probes_a_backend():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "backends") in path.parents:
            continue
        for line, call in probes(path.read_text(), str(path)):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {call}")
    assert not offenders, "ask backend.info instead of probing:\n" + "\n".join(offenders)


def _built(name: str):
    if name == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    if name == "tensorrt":
        from samfast.artifacts.gpu import tensorrt_available

        usable, reason = tensorrt_available()
        if not usable:
            pytest.skip(f"tensorrt cannot run here: {reason}")
        return Predictor("tiny_vit_test", backend=name, device="cuda", precision="fp16", random_weights=True)
    return Predictor("tiny_vit_test", backend=name, random_weights=True)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino", "torch", "torchscript", "tensorrt"])
def test_every_backend_keeps_the_contract(name):
    predictor = _built(name)
    backend = predictor.backend
    assert isinstance(backend, Backend)
    assert all(callable(getattr(backend, method)) for method in CONTRACT)
    info = backend.info
    assert isinstance(info, BackendInfo) and info.name == backend.name == name
    assert backend.describe().items() >= info_fields(info).items()
    assert info.split_decoder == (name in ("onnxruntime", "openvino"))  # sets exported with it
    assert info.releases_graphs == (name in ("onnxruntime", "openvino"))
    # decode_rows: row i against embedding rows[i], the same as decode on that embedding alone
    size = predictor.spec.input_size
    images = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    embeddings = backend.encode(images)
    assert embeddings.shape == (2, *predictor.spec.embedding_shape)
    boxes = np.array([[4, 4, size // 2, size // 2], [8, 2, size - 4, size // 3]], np.float32)
    low, iou = backend.decode_rows(embeddings, [1, 0], Prompts(boxes=boxes))
    low_res = predictor.spec.low_res_size
    assert low.shape == (2, 4, low_res, low_res) and iou.shape == (2, 4)
    for n, row in enumerate([1, 0]):
        alone = backend.decode(embeddings[row : row + 1], Prompts(boxes=boxes[n : n + 1]))
        np.testing.assert_allclose(low[n : n + 1], alone[0], rtol=0, atol=1e-4)
        np.testing.assert_allclose(iou[n : n + 1], alone[1], rtol=0, atol=1e-5)
    backend.release()
    np.testing.assert_allclose(backend.encode(images[:1]), embeddings[:1], rtol=0, atol=1e-4)
