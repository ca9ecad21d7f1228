"""Parity of a backend against the PyTorch fp32 reference, judged by one tolerance table.

The report names the worst element of every output, not only pass or fail (as Polygraphy does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from samfast.eval.metrics import dice


@dataclass(frozen=True)
class Tolerance:
    rtol: float | None  # element-wise on raw outputs; None: not compared element-wise (fp16)
    atol: float | None
    min_mask_dice: float  # per prompt
    min_pass_fraction: float  # share of prompts that must reach min_mask_dice
    max_iou_delta: float  # |Δ predicted IoU|: per prompt for fp32, mean over prompts for fp16
    iou_delta_is_mean: bool = False


# (backend, precision) -> tolerance. fp32 exports must match the reference closely; fp16 engines
# are judged on the masks and scores a user sees.
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("onnxruntime", "fp32"): Tolerance(1e-3, 1e-4, 0.999, 1.0, 1e-3),
    ("torchscript", "fp32"): Tolerance(1e-3, 1e-4, 0.999, 1.0, 1e-3),
    ("tensorrt", "fp32"): Tolerance(1e-3, 1e-4, 0.999, 1.0, 1e-3),
    # torch fp32 on a GPU (TF32 off) against the CPU reference: as close as an fp32 export
    ("torch", "fp32"): Tolerance(1e-3, 1e-4, 0.999, 1.0, 1e-3),
    ("torch", "fp16"): Tolerance(None, None, 0.99, 0.99, 0.005, iou_delta_is_mean=True),
    ("torch", "bf16"): Tolerance(None, None, 0.99, 0.99, 0.005, iou_delta_is_mean=True),
    ("tensorrt", "fp16"): Tolerance(None, None, 0.99, 0.99, 0.005, iou_delta_is_mean=True),
    # OpenVINO fp32 must match as closely as ONNX Runtime; its bf16 is judged like fp16, on masks.
    ("openvino", "fp32"): Tolerance(1e-3, 1e-4, 0.999, 1.0, 1e-3),
    ("openvino", "bf16"): Tolerance(None, None, 0.99, 0.99, 0.005, iou_delta_is_mean=True),
}


@dataclass
class OutputError:
    max_abs: float
    max_rel: float
    worst_index: tuple[int, ...]
    within_tolerance: bool | None


@dataclass
class ParityReport:
    backend: str
    precision: str
    tolerance: Tolerance
    outputs: dict[str, OutputError] = field(default_factory=dict)
    mask_dice: list[float] = field(default_factory=list)
    iou_delta: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        tol = self.tolerance
        if any(o.within_tolerance is False for o in self.outputs.values()):
            return False
        dices = np.asarray(self.mask_dice)
        if dices.size and (dices >= tol.min_mask_dice).mean() < tol.min_pass_fraction:
            return False
        deltas = np.asarray(self.iou_delta)
        if deltas.size:
            worst = deltas.mean() if tol.iou_delta_is_mean else deltas.max()
            if worst > tol.max_iou_delta:
                return False
        return True

    def summary(self) -> dict:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "passed": self.passed,
            "tolerance": asdict(self.tolerance),
            "outputs": {k: asdict(v) for k, v in self.outputs.items()},
            "prompts": len(self.mask_dice),
            "min_mask_dice": min(self.mask_dice, default=None),
            "max_iou_delta": max(self.iou_delta, default=None),
            "mean_iou_delta": float(np.mean(self.iou_delta)) if self.iou_delta else None,
        }


def tolerance_for(backend: str, precision: str) -> Tolerance:
    try:
        return TOLERANCES[(backend, precision)]
    except KeyError:
        raise KeyError(f"no parity tolerance for {backend} {precision}") from None


def compare_output(reference: np.ndarray, candidate: np.ndarray, tol: Tolerance) -> OutputError:
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: {reference.shape} vs {candidate.shape}")
    abs_err = np.abs(candidate - reference)
    if not np.isfinite(candidate).all():
        return OutputError(float("inf"), float("inf"), (), False if tol.atol is not None else None)
    rel_err = abs_err / np.maximum(np.abs(reference), 1e-12)
    worst = np.unravel_index(int(np.argmax(abs_err)), abs_err.shape) if abs_err.size else ()
    within = None
    if tol.atol is not None:
        within = bool(np.all(abs_err <= tol.atol + tol.rtol * np.abs(reference)))
    return OutputError(
        float(abs_err.max(initial=0)), float(rel_err.max(initial=0)), tuple(int(i) for i in worst), within
    )


class ParityChecker:
    """Accumulate outputs of reference and candidate prompt by prompt, then report."""

    def __init__(self, backend: str, precision: str) -> None:
        self.report = ParityReport(backend, precision, tolerance_for(backend, precision))
        self._errors: dict[str, list[OutputError]] = {}

    def add_output(self, name: str, reference: np.ndarray, candidate: np.ndarray) -> None:
        self._errors.setdefault(name, []).append(compare_output(reference, candidate, self.report.tolerance))
        worst = max(self._errors[name], key=lambda e: e.max_abs)
        within = [e.within_tolerance for e in self._errors[name]]
        worst.within_tolerance = None if None in within else all(within)
        self.report.outputs[name] = worst

    def add_prompt(
        self,
        reference_mask: np.ndarray,
        candidate_mask: np.ndarray,
        reference_iou: float,
        candidate_iou: float,
    ) -> None:
        self.report.mask_dice.append(dice(reference_mask, candidate_mask))
        self.report.iou_delta.append(abs(float(reference_iou) - float(candidate_iou)))


def standard_prompts(truth: np.ndarray) -> list[dict]:
    """The fixed prompt sets every parity check runs on one slice: a tight box (single and
    multimask), a box with a click, foreground + background clicks (padding point path)."""
    from samfast.eval.metrics import bounding_box

    box = bounding_box(truth)
    ys, xs = np.nonzero(truth)
    inside = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32)
    outside = np.array([[box[0] - 5, box[1] - 5]], np.float32).clip(0)
    return [
        {"box": box, "multimask_output": False},
        {"box": box, "multimask_output": True},
        {"box": box, "point_coords": inside, "point_labels": np.array([1])},
        {"point_coords": np.vstack([inside, outside]), "point_labels": np.array([1, 0])},
    ]


def compare_predictors(reference, candidate, slices, backend: str, precision: str) -> ParityReport:
    """Run both predictors on every (image, truth) slice with the standard prompts, each prompt
    also a second time with the reference's low-res logits fed back, and judge the candidate."""
    checker = ParityChecker(backend, precision)
    for image, truth in slices:
        reference.set_image(image)
        candidate.set_image(image)
        checker.add_output(
            "image_embeddings", reference.get_image_embedding(), candidate.get_image_embedding()
        )
        for prompt in standard_prompts(truth):
            ref = reference.predict(**prompt)
            got = candidate.predict(**prompt)
            best = int(np.argmax(ref[1]))
            feedback = prompt | {"mask_input": ref[2][best : best + 1]}
            pairs = ((ref, got), (reference.predict(**feedback), candidate.predict(**feedback)))
            for (r_masks, r_iou, r_low), (c_masks, c_iou, c_low) in pairs:
                checker.add_output("low_res_masks", r_low, c_low)
                checker.add_output("iou_predictions", r_iou, c_iou)
                for k in range(len(r_iou)):
                    checker.add_prompt(r_masks[k], c_masks[k], r_iou[k], c_iou[k])
    return checker.report


# -- reduced precision: the task accuracy gate ---------------------------------------------------
# The strict rows above compare masks with the fp32 reference; LiteMedSAM's nearly empty point
# masks make a few pixels decide such a Dice, so bf16 fails them while segmenting as accurately.
# A reduced precision (bf16, fp16, int8) is judged instead by what a user needs to know: whether
# the segmentation is as accurate, on the same slices and prompts as fp32, protocol by protocol
# (segment-anything-fast judges its bf16 / int8 steps the same way, by COCO mIoU within ±0.008).


@dataclass(frozen=True)
class TaskGate:
    max_delta_mean_dice: float  # |mean DSC vs ground truth, candidate - fp32|, per protocol
    max_delta_mean_best_iou: float  # |mean best IoU (mbIoU) vs ground truth, candidate - fp32|
    agreement_levels: tuple[float, ...] = (0.95, 0.99)  # reported: share of masks >= each, vs fp32


# "reduced precision: task accuracy gate" (README: Reduced precisions)
TASK_GATE = TaskGate(max_delta_mean_dice=0.005, max_delta_mean_best_iou=0.005)
REDUCED_PRECISIONS = ("bf16", "fp16", "int8")


def _best(steps: list[dict], masks: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """Best IoU over a slice's steps (the oracle selection) and that mask."""
    best = int(np.argmax([s["oracle_iou"] for s in steps]))
    return float(steps[best]["oracle_iou"]), masks[best][steps[best]["oracle"]]


def gate_slice(steps, masks, reference_steps, reference_masks, truth: np.ndarray) -> dict:
    """One slice of one protocol, candidate and fp32 on the same prompts: each one's best IoU and
    the DSC of that mask against ``truth``, and the Dice of every mask against fp32's."""
    own_iou, own_mask = _best(steps, masks)
    ref_iou, ref_mask = _best(reference_steps, reference_masks)
    agreement = [
        dice(mine, theirs)
        for candidates, references in zip(masks, reference_masks, strict=True)
        for mine, theirs in zip(candidates, references, strict=True)
    ]
    return {
        "best_iou": [own_iou, ref_iou],
        "dice": [dice(own_mask, truth), dice(ref_mask, truth)],
        "agreement": [round(v, 6) for v in agreement],
    }


def gate_verdict(slices: list[dict], gate: TaskGate = TASK_GATE) -> dict:
    """The verdict of one protocol from its slices' ``gate_slice`` records."""
    best_iou = np.asarray([s["best_iou"] for s in slices], float).reshape(-1, 2)
    dsc = np.asarray([s["dice"] for s in slices], float).reshape(-1, 2)
    agreement = np.asarray([v for s in slices for v in s["agreement"]], float)
    if not len(best_iou):
        return {"slices": 0, "passed": False, "reason": "no slices"}
    delta_dice = float(dsc[:, 0].mean() - dsc[:, 1].mean())
    delta_iou = float(best_iou[:, 0].mean() - best_iou[:, 1].mean())
    return {
        "slices": len(slices),
        "masks": int(agreement.size),
        "mean_dice": float(dsc[:, 0].mean()),
        "mean_dice_fp32": float(dsc[:, 1].mean()),
        "delta_mean_dice": delta_dice,
        "mean_best_iou": float(best_iou[:, 0].mean()),
        "mean_best_iou_fp32": float(best_iou[:, 1].mean()),
        "delta_mean_best_iou": delta_iou,
        "agreement_dice": {
            "mean": float(agreement.mean()),
            "p1": float(np.percentile(agreement, 1)),
            **{f"share_ge_{level}": float((agreement >= level).mean()) for level in gate.agreement_levels},
        },
        "passed": abs(delta_dice) <= gate.max_delta_mean_dice
        and abs(delta_iou) <= gate.max_delta_mean_best_iou,
    }


def precision_gate(slices_by_protocol: dict[str, list[dict]], gate: TaskGate = TASK_GATE) -> dict:
    """Per protocol verdicts and the overall one: every protocol must pass."""
    protocols = {p: gate_verdict(s, gate) for p, s in sorted(slices_by_protocol.items())}
    return {
        "gate": asdict(gate),
        "protocols": protocols,
        "passed": bool(protocols) and all(v["passed"] for v in protocols.values()),
    }


@dataclass(frozen=True)
class RunParity:
    """The parity gate of an evaluation run with --compare (the same prompts replayed on another
    backend), read by the bench's exit status, the summary and the report."""

    max_delta_mean_iou: float = 0.002  # |mean IoU - mean IoU on the compare backend|, per protocol
    mask_dice: float = 0.99  # a slice passes when every step's followed masks agree this well ...
    min_fraction: float = 0.99  # ... and this share of the slices must pass

    @property
    def fraction_key(self) -> str:
        return f"fraction_mask_dice_ge_{self.mask_dice:g}"

    def failed(self, entry: dict) -> bool:
        """Whether a summary's parity entry of one protocol misses the gate."""
        too_far = entry["delta_mean_iou"] > self.max_delta_mean_iou
        return too_far or entry[self.fraction_key] < self.min_fraction


RUN_PARITY = RunParity()
