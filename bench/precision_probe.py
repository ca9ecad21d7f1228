"""Which parts of LiteMedSAM tolerate reduced precision? Each variant is judged by the parity table.

Runs the reference (torch fp32) and one candidate per variant on the parity slices
(samfast.eval.verify.parity_slices: real demo tumour slices) with the standard prompts
(samfast.eval.parity.compare_predictors) and prints, per variant, the embedding error, the share
of prompts whose mask reaches Dice 0.99 and whether the fp16-class row passes (Dice >= 0.99 on
>= 99 % of prompts, mean |Δ IoU| <= 0.005). Variants:

- ``bf16:<part>``: torch's CPU autocast (matmuls and convolutions in bf16, accumulation and
  LayerNorm/softmax in fp32, activations between modules fp32) on one encoder stage only, on the
  whole encoder, or on the decoder only. This bounds what any per-layer mixed precision can reach:
  if one stage alone fails the row, every mix that includes it fails too.
- ``openvino-bf16``: the shipped opt-in precision (OpenVINO's inference precision hint).
- ``openvino-int8``: NNCF post-training quantisation of the encoder (``pip install nncf``; skipped
  without it), calibrated on demo tumour slices other than the parity slices; torch fp32 decoder.

    .venv/bin/python bench/precision_probe.py [--json bench/results/precision-<machine>-<date>.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from samfast.artifacts.manifest import dist_version
from samfast.backends.base import BackendInfo, HoldsItsGraphs, info_fields
from samfast.backends.torch_backend import TorchBackend
from samfast.eval.parity import compare_predictors
from samfast.eval.verify import parity_slices
from samfast.models import build_model
from samfast.runtime.predictor import Predictor

ENCODER_PARTS = ("patch_embed", "layers.0", "layers.1", "layers.2", "layers.3", "neck")


def autocast_bf16(module: torch.nn.Module, method: str = "forward") -> None:
    """Run ``module.<method>`` under CPU bf16 autocast and hand fp32 on, so only it is reduced."""
    forward = getattr(module, method)

    def reduced(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(o.float() if torch.is_tensor(o) else o for o in out)
        return out.float()

    setattr(module, method, reduced)


def encoder_flop_shares(model, image: np.ndarray) -> dict[str, float]:
    """Share of the encoder's FLOPs spent in each part (torch's FLOP counter, one slice)."""
    encoder = model.image_encoder
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        encoder(torch.from_numpy(image))
    flops = counter.get_flop_counts()
    total = sum(flops.get("Global", {}).values())
    out = {}
    for part in ENCODER_PARTS:
        # FlopCounterMode keys modules by their dotted path under the counted root's class name.
        key = next((k for k in flops if k.endswith(f".{part}")), None)
        out[part] = sum(flops[key].values()) / total if key else float("nan")
    out["total_gflop"] = total / 1e9
    return out


def torch_variant(model, part: str) -> Predictor:
    candidate = copy.deepcopy(model)
    if part == "encoder":
        autocast_bf16(candidate.image_encoder)
    elif part == "decoder":  # the backends call predict_masks, not forward
        autocast_bf16(candidate.mask_decoder, "predict_masks")
    else:
        autocast_bf16(candidate.image_encoder.get_submodule(part))
    spec, weights = model.samfast_spec, model.samfast_weights
    return Predictor.from_backend(spec.name, weights, TorchBackend(candidate))


class _Int8Encoder(HoldsItsGraphs):
    """NNCF-quantised OpenVINO encoder in front of the torch fp32 decoder: only the encoder is int8."""

    name = "openvino-int8"
    info = BackendInfo(name, "cpu", "int8")

    def __init__(self, model, calibration: list[np.ndarray], threads: int) -> None:
        import nncf
        import openvino as ov

        from samfast.export.cache import ensure_onnx

        folder = ensure_onnx(model.samfast_spec.name, model.samfast_weights, log=lambda m: None)
        core = ov.Core()
        ov_model = core.read_model(str(folder / "encoder.onnx"))
        dataset = nncf.Dataset(calibration, lambda image: {"images": image})
        quantized = nncf.quantize(
            ov_model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration)
        )
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        self._compiled = core.compile_model(quantized, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._decoder = TorchBackend(model)

    def encode(self, images: np.ndarray) -> np.ndarray:
        result = self._request.infer({"images": np.ascontiguousarray(images, np.float32)})
        return np.array(result[self._compiled.output(0)], np.float32, copy=True)

    def decode(self, embedding, prompts):
        return self._decoder.decode(embedding, prompts)

    def describe(self) -> dict:
        return info_fields(self.info)


def calibration_images(predictor: Predictor, slices, per_case: int = 16) -> list[np.ndarray]:
    """Encoder inputs of tumour slices of the demo cases, spread over each case's extent, leaving
    out the parity slices the quantised encoder is judged on."""
    from samfast.eval.datasets import find_brats_cases, load_case
    from samfast.io import find_demo_data
    from samfast.preprocess import normalize_mr_putz

    cases, _ = find_brats_cases(find_demo_data())
    images = []
    for case in cases:
        volume, mask, _ = load_case(case)
        zs = np.flatnonzero(mask.any(axis=(1, 2)))
        scaled = normalize_mr_putz(volume)
        for z in zs[np.linspace(0, len(zs) - 1, per_case).astype(int)]:
            if not any(np.array_equal(scaled[z], image) for image, _ in slices):
                images.append(predictor.prepare_image(scaled[z])[None])
    return images


def judge(reference: Predictor, candidate: Predictor, slices) -> dict:
    """The fp16-class row (the same for torch, OpenVINO and TensorRT reduced precisions)."""
    started = time.perf_counter()
    report = compare_predictors(reference, candidate, slices, "torch", "bf16")
    dice = np.asarray(report.mask_dice)
    embedding = report.outputs["image_embeddings"]
    return {
        "prompts": int(dice.size),
        "share_dice_0_99": float((dice >= 0.99).mean()),
        "min_mask_dice": float(dice.min()),
        "mean_iou_delta": float(np.mean(report.iou_delta)),
        "embedding_max_abs": embedding.max_abs,
        "passed_fp16_class_row": report.passed,
        "seconds": round(time.perf_counter() - started, 1),
    }


def encoder_speedup(reference: Predictor, candidate: Predictor, image: np.ndarray, rounds: int = 5) -> float:
    """torch eager fp32 median / candidate median, one slice, the two taking turns."""
    batch = reference.prepare_image(image)[None]
    times: dict[str, list[float]] = {"reference": [], "candidate": []}
    for _ in range(rounds):
        for name, predictor in (("reference", reference), ("candidate", candidate)):
            started = time.perf_counter()
            predictor.backend.encode(batch)
            times[name].append(time.perf_counter() - started)
    return float(np.median(times["reference"]) / np.median(times["candidate"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here as well")
    parser.add_argument("--skip-int8", action="store_true", help="do not try NNCF int8 even if installed")
    parser.add_argument("--only", nargs="*", help="run only these variants (names as printed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model("litemedsam")
    spec, weights = model.samfast_spec, model.samfast_weights
    reference = Predictor.from_backend(spec.name, weights, TorchBackend(model))
    slices = parity_slices()
    results: dict = {
        "versions": {d: dist_version(d) for d in ("torch", "openvino", "nncf", "samfast")},
        "slices": len(slices),
        "flop_shares": encoder_flop_shares(model, reference.prepare_image(slices[0][0])[None]),
        "variants": {},
    }
    variants = {f"bf16:{part}": (lambda p=part: torch_variant(model, p)) for part in ENCODER_PARTS}
    variants["bf16:encoder"] = lambda: torch_variant(model, "encoder")
    variants["bf16:decoder"] = lambda: torch_variant(model, "decoder")
    variants["openvino-bf16"] = lambda: Predictor(
        "litemedsam", backend="openvino", precision="bf16", threads=args.threads
    )
    if not args.skip_int8 and dist_version("nncf"):
        variants["openvino-int8"] = lambda: Predictor.from_backend(
            spec.name, weights, _Int8Encoder(model, calibration_images(reference, slices), args.threads)
        )
    for name, make in variants.items():
        if args.only and name not in args.only:
            continue
        candidate, speedup = make(), None
        row = judge(reference, candidate, slices)
        if name.startswith("openvino"):  # the graph runtimes: how much faster would it be?
            speedup = encoder_speedup(reference, candidate, slices[0][0])
            row["encoder_speedup_vs_torch_eager"] = round(speedup, 2)
        share = results["flop_shares"].get(name.removeprefix("bf16:"))
        results["variants"][name] = row | ({"encoder_flop_share": share} if share is not None else {})
        print(
            f"{name:>16}: Dice>=0.99 on {100 * row['share_dice_0_99']:5.1f} % of {row['prompts']} prompts"
            f" (min {row['min_mask_dice']:.4f}), mean |dIoU| {row['mean_iou_delta']:.4f},"
            f" embedding max |d| {row['embedding_max_abs']:.4f}"
            + (f", {100 * share:4.1f} % of encoder FLOPs" if share is not None else "")
            + (f", encoder {speedup:.2f}x torch eager" if name.startswith("openvino") else "")
            + f" -> {'PASS' if row['passed_fp16_class_row'] else 'fail'}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    sys.exit(main())
