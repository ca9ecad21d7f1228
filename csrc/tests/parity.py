"""ctest: masks and predicted IoUs from libsamfast equal the Python predictor's on real demo slices.

The C library (through ctypes, the same calls a C host makes) and samfast.Predictor run on the same
Putz-normalised BraTS slices with the same prompts: the project's standard parity prompts (tight
tumour-core box, single and multimask; box + click; foreground + background clicks), Putz et al.'s
first click alone, and each again with low-res logits fed back as mask_input. Judged against
the Predictor of the same backend on the same exported files (--format onnx: backend="openvino";
torchscript: backend="torchscript") and against the PyTorch fp32 reference (backend="torch"):
every mask Dice >= 0.999, every |delta predicted IoU| <= 1e-3.

The tiny_vit_test set (random weights, ImageNet normalisation, 128 input) checks the other
normalisation and a 3-channel slice; there the low-res logits must agree to 1e-4.

On ONNX sets, where the CPU runs bf16 natively, the C library's bf16 (OpenVINO's inference
precision hint) is judged against the PyTorch fp32 reference by the Python side's bf16 gate
(samfast.eval.parity.TOLERANCES[("openvino", "bf16")]).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CASES, dice, library_arguments, load_case, summarise, tumour_slices  # noqa: E402
from samfast_ctypes import Library  # noqa: E402

from samfast import Predictor  # noqa: E402
from samfast.backends.openvino_backend import cpu_supports  # noqa: E402
from samfast.eval.parity import (
    TOLERANCES,  # noqa: E402
    standard_prompts,  # noqa: E402
)
from samfast.eval.prompts import putz_first_point  # noqa: E402
from samfast.preprocess import normalize_mr_putz  # noqa: E402

MIN_DICE = 0.999
MAX_IOU_DELTA = 1e-3
SLICES_PER_CASE = 2
quiet = lambda _: None  # noqa: E731
PYTHON_BACKEND = {"onnx": "openvino", "torchscript": "torchscript"}


def c_predict(model, prompt: dict):
    return model.predict(
        box=prompt.get("box"),
        points=prompt.get("point_coords"),
        labels=prompt.get("point_labels"),
        mask_input=prompt.get("mask_input"),
        multimask=prompt.get("multimask_output", True),
    )


def py_predict(predictor, prompt: dict):
    prompt = dict(prompt)
    prompt.setdefault("multimask_output", True)
    return predictor.predict(**prompt)


def prompt_kind(prompt: dict) -> str:
    parts = []
    if "box" in prompt:
        parts.append("box")
    if "point_labels" in prompt:
        labels = list(np.asarray(prompt["point_labels"]).astype(int))
        parts.append(
            "+".join("fg" if v else "bg" for v in labels) + " click" + ("s" if len(labels) > 1 else "")
        )
    if prompt.get("multimask_output", True):
        parts.append("x3")
    if "mask_input" in prompt:
        parts.append("+mask_input")
    return " ".join(parts)


class Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[str, dict] = {}

    def add(self, kind: str, ref, got) -> None:
        r_masks, r_iou, r_low = ref
        c_masks, c_iou, c_low = got
        assert c_masks.shape == r_masks.shape, (kind, c_masks.shape, r_masks.shape)
        row = self.rows.setdefault(kind, {"masks": 0, "dice": 1.0, "iou": 0.0, "logit": 0.0})
        row["masks"] += len(r_iou)
        for k in range(len(r_iou)):
            row["dice"] = min(row["dice"], dice(r_masks[k], c_masks[k]))
            row["iou"] = max(row["iou"], abs(float(r_iou[k]) - float(c_iou[k])))
        row["logit"] = max(row["logit"], float(np.abs(np.asarray(r_low) - c_low).max()))

    def failures(self, max_logit: float | None = None) -> list[str]:
        bad = []
        for kind, row in self.rows.items():
            if (
                row["dice"] < MIN_DICE
                or row["iou"] > MAX_IOU_DELTA
                or (max_logit and row["logit"] > max_logit)
            ):
                bad.append(f"{self.name} / {kind}: {row}")
        return bad

    def print(self) -> None:
        print(f"\nC library vs {self.name}")
        print(f"  {'prompt':34s} {'masks':>5s} {'min Dice':>9s} {'max dIoU':>9s} {'max dlogit':>10s}")
        for kind, row in self.rows.items():
            print(f"  {kind:34s} {row['masks']:5d} {row['dice']:9.5f} {row['iou']:9.2e} {row['logit']:10.2e}")


def demo_slices() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, Putz-normalised slice, tumour-core truth): spread slices of both cases, and one
    non-square crop per case (other resize rounding, other padding)."""
    slices = []
    for case in CASES:
        volume, truth = load_case(case)
        scaled = normalize_mr_putz(volume)
        # the first tumour slice (small tumour) and the middle one, and a crop of the middle one
        picks = tumour_slices(truth, 3)[:SLICES_PER_CASE]
        for z in picks:
            slices.append((f"{case} z{z}", scaled[z], truth[z]))
        z = picks[-1]
        ys, xs = np.nonzero(truth[z])
        y0, x0 = max(int(ys.min()) - 40, 0), max(int(xs.min()) - 70, 0)
        crop = (slice(y0, y0 + 173), slice(x0, x0 + 131))
        slices.append((f"{case} z{z} crop 173x131", scaled[z][crop], truth[z][crop]))
    return slices


def litemedsam(lib: Library, folder: Path, fmt: str) -> tuple[int, list[str]]:
    model = lib.open(folder)
    info = model.info
    print(
        f"libsamfast {lib.version}: {info['model']} [{info['weights']}] {info['format']} on "
        f"{info['backend']} {info['device']}"
    )
    python_ts = Predictor("litemedsam", backend=PYTHON_BACKEND[fmt], log=quiet)
    # TorchScript is also held to the PyTorch fp32 reference here; OpenVINO's Predictor is held
    # to it by the Python suite (and to the C library here), and bf16 below.
    reference = Predictor("litemedsam", backend="torch", log=quiet) if fmt == "torchscript" else None
    vs_ts = Tally(f'Predictor("litemedsam", backend="{PYTHON_BACKEND[fmt]}")')
    vs_ref = Tally("PyTorch fp32 reference")
    slices = demo_slices()
    for _name, image, truth in slices:
        if truth.sum() == 0:
            continue
        model.set_slice(image)
        python_ts.set_image(image)
        if reference:
            reference.set_image(image)
        x, y, _ = putz_first_point(truth)
        prompts = standard_prompts(truth)
        prompts.append({"point_coords": np.array([[x, y]], np.float32), "point_labels": np.array([1])})
        for prompt in prompts:
            ref_ts = py_predict(python_ts, prompt)
            best = int(np.argmax(ref_ts[1]))
            feedback = prompt | {"mask_input": ref_ts[2][best : best + 1]}
            for p, ts in ((prompt, ref_ts), (feedback, None)):
                got = c_predict(model, p)
                vs_ts.add(prompt_kind(p), ts if ts is not None else py_predict(python_ts, p), got)
                if reference:
                    vs_ref.add(prompt_kind(p), py_predict(reference, p), got)
    model.close()
    print(f"\n{len(slices)} slices: " + ", ".join(name for name, _, _ in slices))
    vs_ts.print()
    if reference:
        vs_ref.print()
    return len(vs_ts.rows) + len(vs_ref.rows), vs_ts.failures() + vs_ref.failures()


def bf16(lib: Library, folder: Path) -> tuple[int, list[str]]:
    """bf16 where the CPU runs it natively, judged by the Python side's bf16 gate (each mask's Dice
    with the PyTorch fp32 reference >= min_mask_dice for min_pass_fraction of the masks, mean
    |delta IoU| <= max_iou_delta): the C library and Predictor(backend="openvino",
    precision="bf16") must get the same verdict and pass fractions within 0.1. (Their masks are not
    compared one to one: in bf16 the C library's split decoder and Python's whole decoder round
    differently.)"""
    if not cpu_supports("bf16"):
        print("\nbf16: this CPU has no native bf16; not judged")
        return 0, []
    gate = asdict(TOLERANCES[("openvino", "bf16")])
    model = lib.open(folder, precision="bf16")
    python_bf16 = Predictor("litemedsam", backend="openvino", precision="bf16", log=quiet)
    reference = Predictor("litemedsam", backend="torch", log=quiet)
    same, dices, deltas = [], {"C": [], "Python": []}, {"C": [], "Python": []}
    for _name, image, truth in demo_slices()[:SLICES_PER_CASE]:
        model.set_slice(image)
        python_bf16.set_image(image)
        reference.set_image(image)
        for prompt in standard_prompts(truth):
            r_masks, r_iou, _ = py_predict(reference, prompt)
            answers = {"C": c_predict(model, prompt)[:2], "Python": py_predict(python_bf16, prompt)[:2]}
            same += [dice(a, b) for a, b in zip(answers["C"][0], answers["Python"][0], strict=True)]
            for side, (masks, iou) in answers.items():
                dices[side] += [dice(a, b) for a, b in zip(r_masks, masks, strict=True)]
                deltas[side] += list(np.abs(np.asarray(r_iou) - np.asarray(iou)))
    model.close()
    verdicts, fractions = {}, {}
    print(f"\nbf16, {len(same)} masks: C vs Python bf16 min Dice {min(same):.5f}")
    for side in dices:
        passing = fractions[side] = float(np.mean(np.asarray(dices[side]) >= gate["min_mask_dice"]))
        mean_delta = float(np.mean(deltas[side]))
        verdicts[side] = passing >= gate["min_pass_fraction"] and mean_delta <= gate["max_iou_delta"]
        verdict = "passes" if verdicts[side] else "FAILS the bf16 gate"
        print(
            f"  {side} bf16 vs PyTorch fp32 reference: {passing:.1%} of masks Dice >= "
            f"{gate['min_mask_dice']} (gate {gate['min_pass_fraction']:.0%}), mean |dIoU| "
            f"{mean_delta:.2e} (gate {gate['max_iou_delta']}): {verdict}"
        )
    failures = []
    if abs(fractions["C"] - fractions["Python"]) > 0.1:
        failures.append(f"bf16 gate pass fractions differ by more than 0.1: {fractions}")
    if verdicts["C"] != verdicts["Python"]:
        failures.append(f"bf16 gate verdicts differ: {verdicts}")
    return 2, failures


def tiny(lib: Library, folder: Path, fmt: str) -> tuple[int, list[str]]:
    """ImageNet normalisation and 3-channel input, on the random-weights test model."""
    model = lib.open(folder)
    backend = PYTHON_BACKEND[fmt]
    python_ts = Predictor("tiny_vit_test", backend=backend, random_weights=True, log=quiet)
    tally = Tally(f'Predictor("tiny_vit_test", backend="{backend}"), random weights')
    volume, truth = load_case(CASES[0])
    scaled = normalize_mr_putz(volume)
    z = tumour_slices(truth, 1)[0]
    rgb = np.stack([scaled[z], scaled[z - 2], 255.0 - scaled[z + 2]], axis=-1)[5:205]
    for image, mask in ((scaled[z], truth[z]), (rgb, truth[z][5:205])):
        model.set_slice(image)
        python_ts.set_image(image)
        for prompt in standard_prompts(mask):
            tally.add(prompt_kind(prompt), py_predict(python_ts, prompt), c_predict(model, prompt))
    model.close()
    tally.print()
    return len(tally.rows), tally.failures(max_logit=1e-4)


def main() -> int:
    args = library_arguments(__doc__, PYTHON_BACKEND)
    lib = Library(args.lib)
    sets = args.fixtures / "sets" / args.format
    checks, failures = litemedsam(lib, sets / "litemedsam", args.format)
    more, failed = tiny(lib, sets / "tiny_vit_test", args.format)
    checks, failures = checks + more, failures + failed
    if args.format == "onnx":
        more, failed = bf16(lib, sets / "litemedsam")
        checks, failures = checks + more, failures + failed
    print()
    return summarise(checks, failures)  # one check per (comparison, prompt kind) row above


if __name__ == "__main__":
    sys.exit(main())
