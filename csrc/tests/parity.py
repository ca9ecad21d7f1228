"""ctest: masks and predicted IoUs from libsamfast equal the Python predictor's on real demo slices.

The C library (through ctypes, the same calls a C host makes) and samfast.Predictor run on the same
Putz-normalised BraTS slices with the same prompts: the project's standard parity prompts (tight
tumour-core box, single and multimask; box + click; foreground + background clicks), Putz et al.'s
first click alone, and each again with low-res logits fed back as mask_input. Judged against
Predictor(backend="torchscript") on the same exported files and against the PyTorch fp32 reference
(backend="torch"): every mask Dice >= 0.999, every |delta predicted IoU| <= 1e-3.

The tiny_vit_test set (random weights, ImageNet normalisation, 128 input) checks the other
normalisation and a 3-channel slice; there the low-res logits must agree to 1e-4.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CASES, dice, load_case, tumour_slices  # noqa: E402
from samfast_ctypes import Library  # noqa: E402

from samfast import Predictor  # noqa: E402
from samfast.eval.parity import standard_prompts  # noqa: E402
from samfast.eval.prompts import putz_first_point  # noqa: E402
from samfast.preprocess import normalize_mr_putz  # noqa: E402

MIN_DICE = 0.999
MAX_IOU_DELTA = 1e-3
SLICES_PER_CASE = 2
quiet = lambda _: None  # noqa: E731


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


def litemedsam(lib: Library, folder: Path) -> tuple[int, list[str]]:
    model = lib.open(folder)
    info = model.info
    print(
        f"libsamfast {lib.version}: {info['model']} [{info['weights']}] {info['format']} on {info['device']}"
    )
    python_ts = Predictor("litemedsam", backend="torchscript", log=quiet)
    reference = Predictor("litemedsam", backend="torch", log=quiet)
    vs_ts, vs_ref = Tally('Predictor("litemedsam", backend="torchscript")'), Tally("PyTorch fp32 reference")
    slices = demo_slices()
    for _name, image, truth in slices:
        if truth.sum() == 0:
            continue
        model.set_slice(image)
        python_ts.set_image(image)
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
                vs_ref.add(prompt_kind(p), py_predict(reference, p), got)
    model.close()
    print(f"\n{len(slices)} slices: " + ", ".join(name for name, _, _ in slices))
    vs_ts.print()
    vs_ref.print()
    return len(vs_ts.rows) + len(vs_ref.rows), vs_ts.failures() + vs_ref.failures()


def tiny(lib: Library, folder: Path) -> tuple[int, list[str]]:
    """ImageNet normalisation and 3-channel input, on the random-weights test model."""
    model = lib.open(folder)
    python_ts = Predictor("tiny_vit_test", backend="torchscript", random_weights=True, log=quiet)
    tally = Tally('Predictor("tiny_vit_test", backend="torchscript"), random weights')
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lib", required=True)
    parser.add_argument("--fixtures", type=Path, required=True)
    args = parser.parse_args()
    lib = Library(args.lib)
    checks, failures = litemedsam(lib, args.fixtures / "sets" / "litemedsam")
    more, failed = tiny(lib, args.fixtures / "sets" / "tiny_vit_test")
    checks, failures = checks + more, failures + failed
    print()
    for line in failures:
        print("FAIL", line)
    # one check per (comparison, prompt kind) row above
    print(f"{checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
