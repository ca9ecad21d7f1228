"""Benchmark fixtures: one real BraTS slice, both LiteMedSAM backends pinned to the same thread count.

Not collected by the normal test run (pyproject's testpaths is ["tests"]); run it explicitly:

    .venv/bin/pytest bench/ --benchmark-only --benchmark-json=bench/results/latest.json
    .venv/bin/python bench/compare.py bench/results/latest.json

``SAMFAST_BENCH_THREADS`` sets the thread count of both backends (default 2, the CPU dev machine).
The ONNX export goes to a per-session temporary folder, never into the repository's engines/.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from samfast import preprocess
from samfast.backends import Prompts
from samfast.runtime.predictor import Predictor

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CASE = "BraTS20_Demo_001"
CASE_DIR = REPO / "data" / "brats_demo" / CASE
SLICE = 94  # axial slice through the tumour core
TUMOUR_CORE = (1, 4)
DEMO = REPO / "data" / "brats_demo"
BACKENDS = ("torch", "onnxruntime")
MODEL = "litemedsam"
# Embeddings of the two backends must agree this closely before anything is timed.
EMBEDDING_ATOL = 1e-3
DEFAULT_THREADS = 2


def read_demo(case: str, kind: str) -> np.ndarray:
    """One demo volume ("t1ce" or "seg") as SimpleITK reads it; from the arrays exported by
    `make gpu-bundle` when SAMFAST_DEMO_ARRAYS names their folder (a machine without SimpleITK)."""
    arrays = os.environ.get("SAMFAST_DEMO_ARRAYS")
    if arrays:
        with np.load(Path(arrays) / f"{case}.npz") as stored:
            return stored[kind]
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(DEMO / case / f"{case}_{kind}.nii.gz")))


def _load_compare():
    """bench/compare.py, loaded by path: bench/ is not a package and ``compare`` is a common name."""
    spec = importlib.util.spec_from_file_location("samfast_bench_compare", BENCH / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load_compare()


def bench_threads() -> int:
    value = os.environ.get("SAMFAST_BENCH_THREADS", str(DEFAULT_THREADS))
    try:
        threads = int(value)
    except ValueError:
        raise pytest.UsageError(f"SAMFAST_BENCH_THREADS must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise pytest.UsageError(f"SAMFAST_BENCH_THREADS must be a positive integer, got {value!r}")
    return threads


@dataclass
class SliceInput:
    original_size: tuple[int, int]  # (H, W) of the slice
    batch: np.ndarray  # (1, 3, S, S) float32 encoder input
    box: np.ndarray  # (1, 4) x0 y0 x1 y1 tumour-core box in slice pixels
    boxes16: np.ndarray  # (16, 4) jittered copies of that box
    description: str
    input_size: int  # side of the encoder's square frame

    def prompts(self, count: int) -> Prompts:
        """1 or 16 boxes in the encoder's frame: what Predictor.predict_batch hands the backend."""
        boxes = {1: self.box, 16: self.boxes16}[count]
        return Prompts(boxes=preprocess.transform_boxes(boxes, self.original_size, self.input_size))


@dataclass
class BenchBackends:
    threads: int
    predictors: dict[str, Predictor]
    embeddings: dict[str, np.ndarray]  # each backend's own embedding of the slice
    embedding_max_abs_diff: float
    embedding_atol: float = EMBEDDING_ATOL

    def backend(self, name: str):
        return self.predictors[name].backend


@pytest.fixture(scope="session")
def threads() -> int:
    return bench_threads()


@pytest.fixture(scope="session", autouse=True)
def pinned_torch_threads(threads):
    """torch's intra-op pool gets the same thread count as the onnxruntime sessions."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield threads
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def bench_engine_dir(tmp_path_factory) -> Path:
    """The ONNX export is cached in a session-private folder, not in the repository."""
    folder = tmp_path_factory.mktemp("engines")
    with pytest.MonkeyPatch.context() as patch:  # restores the variable (or its absence) after
        patch.setenv("SAMFAST_ENGINES", str(folder))
        yield folder


@pytest.fixture(scope="session")
def brats_slice() -> tuple[np.ndarray, np.ndarray]:
    """(Putz-normalised axial slice H×W float32, tumour-core mask H×W bool) of the demo case."""
    t1ce, seg = read_demo(CASE, "t1ce"), read_demo(CASE, "seg")
    # Putz normalisation works on the whole volume, so the slice keeps its relative brightness.
    volume = preprocess.normalize_mr_putz(t1ce.astype(np.float32))
    return volume[SLICE], np.isin(seg[SLICE], TUMOUR_CORE)


def _make_predictor(name: str, threads: int) -> Predictor:
    # threads sizes ONNX Runtime's intra-op pool; torch's is pinned by the pinned_torch_threads fixture.
    predictor = Predictor(model=MODEL, backend=name, threads=threads)
    if name == "onnxruntime":
        actual = predictor.backend.encoder.get_session_options().intra_op_num_threads
        assert actual == threads, f"onnxruntime encoder runs {actual} intra-op threads, wanted {threads}"
    return predictor


@pytest.fixture(scope="module")
def bench_backends(threads, pinned_torch_threads, bench_engine_dir, brats_slice) -> BenchBackends:
    """Both backends built once per module; refuses to hand out a pair that disagrees."""
    assert torch.get_num_threads() == threads
    predictors = {name: _make_predictor(name, threads) for name in BACKENDS}
    batch = predictors["torch"].prepare_image(brats_slice[0])[None]
    embeddings = {name: p.backend.encode(batch) for name, p in predictors.items()}
    reference, other = embeddings["torch"], embeddings["onnxruntime"]
    assert reference.shape == other.shape == (1, *predictors["torch"].spec.embedding_shape)
    diff = float(np.abs(reference - other).max())
    # Never time a broken path: the export must reproduce the eager encoder.
    assert np.allclose(reference, other, atol=EMBEDDING_ATOL), (
        f"onnxruntime and torch embeddings differ by up to {diff:.3g} (atol {EMBEDDING_ATOL})"
    )
    return BenchBackends(threads, predictors, embeddings, diff)


@pytest.fixture(scope="module")
def slice_input(bench_backends, brats_slice) -> SliceInput:
    image, mask = brats_slice
    batch = bench_backends.predictors["torch"].prepare_image(image)[None]
    ys, xs = np.nonzero(mask)
    assert xs.size, f"slice {SLICE} of {CASE} has no tumour core"
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    height, width = image.shape
    jitter = np.random.default_rng(0).integers(-6, 7, size=(16, 4)).astype(np.float32)
    boxes16 = np.repeat(box, 16, axis=0) + jitter
    boxes16[:, 0::2] = boxes16[:, 0::2].clip(0, width)
    boxes16[:, 1::2] = boxes16[:, 1::2].clip(0, height)
    description = f"{CASE} t1ce axial slice {SLICE}, Putz-normalised (volume), prepare_image"
    input_size = bench_backends.predictors["torch"].spec.input_size
    return SliceInput((height, width), batch, box, boxes16, description, input_size)


# -- reporting --------------------------------------------------------------------------------


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Put the side-by-side ratios into the JSON too, so one file carries the whole result."""
    output_json["samfast"] = {
        "comparisons": compare.compare(output_json.get("benchmarks", [])),
        "threads_requested": bench_threads(),
        "cpu_count": os.cpu_count(),
    }


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After pytest-benchmark's table: one line per group, the same text compare.py prints."""
    session = getattr(config, "_benchmarksession", None)  # pytest-benchmark's (private) session
    benchmarks = getattr(session, "benchmarks", None)
    if not benchmarks:
        return
    try:
        rows = [bench.as_dict(include_data=False) for bench in benchmarks if not bench.has_error]
        lines = compare.report_lines(compare.compare(rows), os.cpu_count())
    except Exception as error:  # reporting must never hide the benchmark table
        terminalreporter.write_line(f"samfast bench: could not compute ratios ({error!r})")
        return
    if lines:
        terminalreporter.section("samfast: onnxruntime vs torch eager")
        for line in lines:
            terminalreporter.write_line(line)
