"""ctest: samfast_segment_volume gives the Python API's 3D-mode masks on both shipped demo cases.

For each demo case (t1ce; the 3D box is the tumour core's bounding box, labels 1 and 4) the C
library (through ctypes) and samfast.clinical.segment.segment_volume, on Predictor("litemedsam",
backend="openvino", precision="fp32") with the CLI's embedding cache (so the Python walk encodes
its slices ahead in batches, as `samfast segment` does), run on the same Volume.normalised() input
and the same exported ONNX set. The C library runs that set on OpenVINO at fp32 as well, so the
two walks are held to the strictest bound: the same slices walked, every slice's box equal to the
last bit, identical masks (0 differing voxels) and predicted IoUs equal within 1e-6.

Also checked, cheaply: the C defaults are PropagationRule()'s (name and constants); a box on one
slice (the walk with its stop rule) on a few slices of case 001 with an anisotropic in-plane
spacing (the margin converted per axis); and the refusals (box outside the volume, inverted,
empty, NaN voxels, bad options), which leave the mask all zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CASES, DEMO, REPO, TUMOUR_CORE, dice  # noqa: E402
from samfast_ctypes import Library, SamfastCError, _f32p, _ptr, _u8p  # noqa: E402

from samfast import Predictor  # noqa: E402
from samfast.clinical.prompts import build_prompts  # noqa: E402
from samfast.clinical.propagate import PropagationRule  # noqa: E402
from samfast.clinical.segment import segment_volume  # noqa: E402
from samfast.clinical.slice_model import SliceModel  # noqa: E402
from samfast.clinical.volume import load_volume  # noqa: E402
from samfast.runtime.embedding_cache import EmbeddingCache  # noqa: E402

MAX_SCORE_DELTA = 1e-6
quiet = lambda _: None  # noqa: E731


def load_case(case: str):
    """(Volume of the t1ce, tumour-core truth (z, y, x) bool) of a demo case."""
    volume = load_volume(DEMO / case / f"{case}_t1ce.nii.gz")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(DEMO / case / f"{case}_seg.nii.gz")))
    return volume, np.isin(seg, TUMOUR_CORE)


def compare(name: str, c_result, py_result, truth, seconds: tuple[float, float]) -> list[str]:
    """One line of figures; the failures, if any."""
    c_mask, c_scores, c_boxes = c_result
    walked_c = [int(z) for z in np.flatnonzero(~np.isnan(c_scores))]
    walked_py = sorted(py_result.scores)
    differing = int(np.count_nonzero(c_mask != py_result.mask))
    same_walk = walked_c == walked_py
    box_slices = [
        z for z in walked_py if not np.array_equal(np.asarray(py_result.boxes[z], np.float32), c_boxes[z])
    ]
    deltas = [abs(py_result.scores[z] - float(c_scores[z])) for z in walked_py] if same_walk else []
    score_delta = max(deltas, default=0.0)
    span = f"{walked_c[0]}..{walked_c[-1]}" if walked_c else "none"
    truth_text = "" if truth is None else f", 3D Dice with the truth {dice(c_mask, truth):.4f}"
    print(
        f"{name}: {len(walked_c)} slices walked ({span}), "
        f"{int(c_mask.sum())} voxels; C vs Python: 3D Dice {dice(c_mask, py_result.mask):.6f}, "
        f"{differing} voxels differ, boxes differ on {len(box_slices)} slices, max |dIoU| {score_delta:.1e}"
        f"{truth_text}; C {seconds[0]:.1f} s, Python {seconds[1]:.1f} s"
    )
    failures = []
    if not same_walk:
        failures.append(f"{name}: slices walked differ: C {walked_c}, Python {walked_py}")
    if differing:
        failures.append(f"{name}: {differing} voxels differ")
    if box_slices:
        z = box_slices[0]
        first = f"first: C {c_boxes[z]}, Python {py_result.boxes[z]}"
        failures.append(f"{name}: boxes differ on slices {box_slices} ({first})")
    if score_delta > MAX_SCORE_DELTA:
        failures.append(f"{name}: predicted IoUs differ by {score_delta:.2e} > {MAX_SCORE_DELTA}")
    if not c_mask.any():
        failures.append(f"{name}: empty mask")
    return failures


def python_walk(predictor, volume_input: np.ndarray, image: sitk.Image, box: list[float], spacing_yx):
    """The Python API's 3D mode as `samfast segment --box` runs it (one embedding cache, prefetch)."""
    predictor.cache = EmbeddingCache()
    model = SliceModel(predictor, volume_input)
    return segment_volume(model, build_prompts(image, box), spacing_yx, "3d")


def check_defaults(lib: Library) -> list[str]:
    rule = PropagationRule()
    c_defaults = lib.volume_defaults()
    python_defaults = {k: v for k, v in dataclasses.asdict(rule).items() if k in c_defaults}
    header = (REPO / "csrc" / "include" / "samfast.h").read_text()
    name = re.search(r'#define SAMFAST_VOLUME_RULE "([^"]*)"', header)
    failures = []
    if python_defaults != c_defaults:
        failures.append(
            f"C defaults {c_defaults} are not PropagationRule()'s {python_defaults}: "
            "update csrc/src/volume.cpp and csrc/include/samfast.h"
        )
    if name is None or name.group(1) != rule.name:
        shown = name and name.group(1)
        failures.append(f"SAMFAST_VOLUME_RULE is {shown!r}, PropagationRule().name {rule.name!r}")
    print(f"rule {rule.name}: C defaults {'match' if not failures else 'DIFFER from'} PropagationRule()")
    return failures


def check_refusals(model) -> list[str]:
    """Bad input: the status and one line, the mask left all zero; no slice is encoded."""
    volume = np.zeros((6, 20, 30), np.float32)
    nan_volume = volume.copy()
    nan_volume[4, 3, 3] = np.nan
    cases = [
        ("box outside the volume", volume, [2, 2, 1, 40, 10, 3], None, "SAMFAST_ERR_OUT_OF_RANGE"),
        ("box below slice 0", volume, [2, 2, -0.6, 20, 10, 3], None, "SAMFAST_ERR_OUT_OF_RANGE"),
        ("inverted box", volume, [20, 2, 1, 2, 10, 3], None, "SAMFAST_ERR_INVALID_ARGUMENT"),
        ("inverted slices", volume, [2, 2, 4, 20, 10, 1], None, "SAMFAST_ERR_INVALID_ARGUMENT"),
        ("empty box", volume, [5, 2, 1, 5, 10, 3], None, "SAMFAST_ERR_INVALID_ARGUMENT"),
        ("NaN box", volume, [np.nan, 2, 1, 5, 10, 3], None, "SAMFAST_ERR_INVALID_ARGUMENT"),
        ("NaN voxel", nan_volume, [2, 2, 1, 20, 10, 3], None, "SAMFAST_ERR_INVALID_ARGUMENT"),
        ("momentum 1.5", volume, [2, 2, 1, 20, 10, 3], {"momentum": 1.5}, "SAMFAST_ERR_INVALID_ARGUMENT"),
        ("margin -1 mm", volume, [2, 2, 1, 20, 10, 3], {"margin_mm": -1.0}, "SAMFAST_ERR_INVALID_ARGUMENT"),
        ("struct_size 0", volume, [2, 2, 1, 20, 10, 3], {"struct_size": 0}, "SAMFAST_ERR_INVALID_ARGUMENT"),
    ]
    failures = []
    for what, vol, box, options, expected in cases:
        try:
            model.segment_volume(vol, box, options=options)
            failures.append(f"refusal: {what} was accepted")
        except SamfastCError as error:
            if error.name != expected or "\n" in error.message or not error.message:
                failures.append(f"refusal: {what}: {error.name} {error.message!r}, expected {expected}")
    # a refused call leaves the caller's buffers cleared, not half written
    mask = np.ones(volume.shape, np.uint8)
    scores = np.zeros(volume.shape[0], np.float32)
    box = np.array([2, 2, 1, 20, 10, 3], np.float32)
    status = model.library.lib.samfast_segment_volume(
        model.handle, _ptr(nan_volume, _f32p), *volume.shape, 1.0, 1.0, 1.0, _ptr(box, _f32p), None,
        _ptr(mask, _u8p), _ptr(scores, _f32p), None,
    )  # fmt: skip
    if status == 0 or mask.any() or not np.isnan(scores).all():
        failures.append(f"refusal: status {status}, {int(mask.sum())} mask bytes left set, scores {scores}")
    print(f"refusals: {len(cases) - len(failures)} of {len(cases)} refused with their status and one line")
    return failures


def one_slice_box(model, predictor) -> list[str]:
    """A box on one slice: the walk with its stop rule, on 11 slices around the top of case 001's
    tumour core (the walk up runs past its end), with 0.8 mm columns and 1.25 mm rows."""
    case = CASES[0]
    volume, truth = load_case(case)
    top = int(np.flatnonzero(truth.any(axis=(1, 2))).max())
    crop = slice(top - 7, top + 4)
    volume_input = np.ascontiguousarray(volume.normalised()[crop])
    image = sitk.GetImageFromArray(volume_input)
    image.SetSpacing((0.8, 1.25, 1.0))
    start = 4  # three slices below the tumour core's top
    ys, xs = np.nonzero(truth[crop][start])
    box = [float(xs.min()), float(ys.min()), start, float(xs.max()), float(ys.max()), start]
    t = time.perf_counter()
    c_result = model.segment_volume(volume_input, box, (1.0, 1.25, 0.8))
    c_seconds = time.perf_counter() - t
    t = time.perf_counter()
    py_result = python_walk(predictor, volume_input, image, box, (1.25, 0.8))
    py_seconds = time.perf_counter() - t
    name = f"{case} one-slice box on slice {top - 7 + start}, 0.8 x 1.25 mm"
    failures = compare(name, c_result, py_result, None, (c_seconds, py_seconds))
    print(f"  Python stops: {py_result.stops}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lib", required=True)
    parser.add_argument("--fixtures", type=Path, required=True)
    args = parser.parse_args()
    lib = Library(args.lib)
    model = lib.open(args.fixtures / "sets" / "onnx" / "litemedsam")
    info = model.info
    print(
        f"libsamfast {lib.version}: {info['model']} {info['format']} on {info['backend']} "
        f'{info["precision"]}; Python: Predictor("litemedsam", backend="openvino", precision="fp32")'
    )
    predictor = Predictor("litemedsam", backend="openvino", precision="fp32", log=quiet)
    failures = check_defaults(lib) + check_refusals(model)
    for case in CASES:
        volume, truth = load_case(case)
        zs, ys, xs = np.nonzero(truth)
        box = [float(v) for v in (xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max())]
        volume_input = volume.normalised()
        sx, sy, sz = volume.image.GetSpacing()
        t = time.perf_counter()
        c_result = model.segment_volume(volume_input, box, (sz, sy, sx))
        c_seconds = time.perf_counter() - t
        t = time.perf_counter()
        py_result = python_walk(predictor, volume_input, volume.image, box, (sy, sx))
        py_seconds = time.perf_counter() - t
        failures += compare(f"{case} box {box}", c_result, py_result, truth, (c_seconds, py_seconds))
    failures += one_slice_box(model, predictor)
    model.close()
    print()
    for line in failures:
        print("FAIL", line)
    print("identical to the Python API" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
