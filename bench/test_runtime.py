"""The fast runtime against PyTorch eager, side by side: encoder, decoder, whole-volume protocol, RSS.

Variants of one group take turns call by call (the order rotating each round), so a shared,
noisy machine slows them alike; each group's per-variant median, min and max go into the
benchmark's ``extra_info`` (pytest-benchmark itself times the whole interleaved run, once).
Every fast result is checked against the eager one before its time counts. Nothing asserts speed.

    .venv/bin/pytest bench/test_runtime.py --benchmark-only --benchmark-json=bench/results/latest.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from conftest import CASE, TUMOUR_CORE, read_demo
from naive_putz import putz_slice
from test_latency import CpuWatch, load_average

from samfast import preprocess
from samfast.artifacts.manifest import dist_version
from samfast.backends import Prompts
from samfast.eval.protocols import run_slices
from samfast.runtime.embedding_cache import EmbeddingCache
from samfast.runtime.predictor import Predictor
from samfast.runtime.streaming import stream_embeddings

MODEL = "litemedsam"
# variant -> (backend, precision); torch is the eager fp32 reference every ratio divides.
VARIANTS = {
    "torch": ("torch", "fp32"),
    "onnxruntime": ("onnxruntime", "fp32"),
    "openvino": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
}
FP32_ATOL = 1e-3  # embeddings and low-res logits of fp32 variants vs eager
DECODER_ROUNDS = {1: 30, 8: 6, 64: 2}


def versions() -> dict:
    out = {"python": sys.version.split()[0], "cpu_count": os.cpu_count()}
    return out | {dist: dist_version(dist) for dist in ("torch", "onnxruntime", "openvino", "samfast")}


def interleaved(
    variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, per: int = 1
) -> dict:
    """Time each variant ``rounds`` times, taking turns; seconds per ``per`` items (slices, prompts)."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append((time.perf_counter() - start) / per)
    stats = {
        name: {"median_s": float(np.median(t)), "min_s": min(t), "max_s": max(t), "rounds": len(t)}
        for name, t in times.items()
    }
    reference = stats.get("torch") or stats.get("naive")
    for entry in stats.values():
        if reference:
            entry["speedup_vs_eager_median"] = round(reference["median_s"] / entry["median_s"], 3)
            # Worst and best case of the ratio over the rounds (slowest fast vs fastest eager...).
            entry["speedup_range"] = [
                round(reference["min_s"] / entry["max_s"], 3),
                round(reference["max_s"] / entry["min_s"], 3),
            ]
    return stats


def record(benchmark, what: str, stats: dict, watch: CpuWatch | None = None, **extra) -> None:
    benchmark.extra_info.update(
        {
            "what": what,
            "variants": stats,
            "versions": versions(),
            "threads": torch.get_num_threads(),
            "other_processes_cpu_cores": None if watch is None else watch.other_cores,
            "loadavg_after": load_average(),
            **extra,
        }
    )
    lines = [f"{what}:"] + [
        f"  {name:>22}: {s['median_s'] * 1e3:9.2f} ms"
        f" (min {s['min_s'] * 1e3:.2f}, max {s['max_s'] * 1e3:.2f})"
        + (
            f"  x{s['speedup_vs_eager_median']} [{s['speedup_range'][0]}-{s['speedup_range'][1]}]"
            if "speedup_range" in s
            else ""
        )
        for name, s in stats.items()
    ]
    print("\n".join(lines))


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    """(Putz-normalised t1ce volume z,y,x, tumour-core mask) of the bench's demo case."""
    t1ce, seg = read_demo(CASE, "t1ce"), read_demo(CASE, "seg")
    return preprocess.normalize_mr_putz(t1ce.astype(np.float32)), np.isin(seg, TUMOUR_CORE)


@pytest.fixture(scope="module")
def predictors(threads, pinned_torch_threads, bench_engine_dir) -> dict[str, Predictor]:
    return {
        name: Predictor(MODEL, backend=backend, precision=precision, threads=threads)
        for name, (backend, precision) in VARIANTS.items()
    }


@pytest.fixture(scope="module")
def batch(predictors, case) -> np.ndarray:
    volume, mask = case
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    return predictors["torch"].prepare_image(volume[z])[None]


@pytest.fixture(scope="module")
def embeddings(predictors, batch) -> dict[str, np.ndarray]:
    """Each variant's embedding of the bench slice; fp32 variants must reproduce eager first."""
    out = {name: p.backend.encode(batch) for name, p in predictors.items()}
    for name, (_, precision) in VARIANTS.items():
        if precision == "fp32":
            np.testing.assert_allclose(out[name], out["torch"], rtol=0, atol=FP32_ATOL)
    return out


def embedding_errors(embeddings) -> dict:
    ref = embeddings["torch"]
    return {
        name: {
            "max_abs": float(np.abs(e - ref).max()),
            "relative_l2": float(np.linalg.norm(e - ref) / np.linalg.norm(ref)),
        }
        for name, e in embeddings.items()
    }


@pytest.mark.benchmark(group="runtime-encoder")
def test_encoder_per_slice(benchmark, predictors, batch, embeddings):
    variants = {name: (lambda p=p: p.backend.encode(batch)) for name, p in predictors.items()}
    with CpuWatch() as watch:
        stats = benchmark.pedantic(interleaved, args=(variants, 7), rounds=1, iterations=1)
    record(
        benchmark,
        "encoder, one (1,3,256,256) slice per call",
        stats,
        watch,
        embedding_vs_eager=embedding_errors(embeddings),
    )


@pytest.mark.benchmark(group="runtime-encoder-batching")
def test_encoder_batching_per_slice(benchmark, predictors, batch):
    """Does the CPU gain from several slices per encoder call? (seconds per slice)"""
    four = np.repeat(batch, 4, axis=0)
    variants = {}
    for name in ("onnxruntime", "openvino"):
        encode = predictors[name].backend.encode
        variants[f"{name}-batch1"] = lambda e=encode: [e(batch) for _ in range(4)]
        variants[f"{name}-batch4"] = lambda e=encode: e(four)
    with CpuWatch() as watch:
        stats = benchmark.pedantic(interleaved, args=(variants, 4), kwargs={"per": 4}, rounds=1, iterations=1)
    record(benchmark, "encoder seconds per slice: 4 calls of 1 slice vs 1 call of 4", stats, watch)


def click_prompts(count: int, mask: np.ndarray, size: tuple[int, int], side: int) -> Prompts:
    """``count`` prompt sets of a foreground click inside the tumour and a background click."""
    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(mask)
    picks = rng.integers(0, xs.size, count)
    fg = np.stack([xs[picks], ys[picks]], 1).astype(np.float32)
    bg = np.tile(np.array([[5.0, 5.0]], np.float32), (count, 1))
    coords = np.stack([fg, bg], 1)
    return Prompts(
        point_coords=preprocess.transform_coords(coords, size, side),
        point_labels=np.tile(np.array([[1.0, 0.0]], np.float32), (count, 1)),
    )


@pytest.mark.parametrize("count", [1, 8, 64])
def test_decoder_per_prompt(benchmark, predictors, embeddings, case, count):
    """Decoder only, on an embedding already computed (the interactive click on a cached slice)."""
    benchmark.group = f"runtime-decoder-batch{count}"
    volume, mask = case
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    prompts = click_prompts(count, mask[z], volume.shape[1:], predictors["torch"].spec.input_size)
    # The whole decoder graph on every call (decode_full where a split decoder would keep an
    # image state between calls), against the split's prompt side below.
    calls = {
        name: (
            lambda d=p.backend.decode_full if p.backend.info.split_decoder else p.backend.decode, n=name: d(
                embeddings[n], prompts
            )
        )
        for name, p in predictors.items()
    }
    # The decoder split at the prompt: the slice's image state is made once, with its embedding
    # (Predictor does this on the first click); each click then runs only the prompt side.
    split = predictors["onnxruntime"].backend
    state = split.image_state(embeddings["onnxruntime"])
    calls["onnxruntime-split"] = lambda: split.decode_state(state, prompts)
    outputs = {name: call() for name, call in calls.items()}
    agreement = {}
    for name, (low, iou) in outputs.items():
        agreement[name] = {
            "low_res_max_abs": float(np.abs(low - outputs["torch"][0]).max()),
            "iou_max_abs": float(np.abs(iou - outputs["torch"][1]).max()),
        }
        if VARIANTS.get(name, ("", "fp32"))[1] == "fp32":  # never time a wrong answer
            assert (
                agreement[name]["low_res_max_abs"] < FP32_ATOL and agreement[name]["iou_max_abs"] < FP32_ATOL
            )
    with CpuWatch() as watch:
        stats = benchmark.pedantic(
            interleaved, args=(calls, DECODER_ROUNDS[count]), kwargs={"per": count}, rounds=1, iterations=1
        )
    record(
        benchmark, f"decoder seconds per prompt, {count} prompt(s) per call", stats, watch, vs_eager=agreement
    )


def naive_volume(predictor, volume, gts: dict[int, np.ndarray]) -> dict[int, list]:
    """segment-anything style: set_image per slice, predict per point, eager, no batching/cache."""
    return {
        z: [{"points": points, "ious": ious} for points, ious in putz_slice(predictor, volume[z], gt)]
        for z, gt in gts.items()
    }


def fast_volume(encoder, decoder, volume, gts: dict[int, np.ndarray], cache) -> dict[int, list]:
    """Streamed OpenVINO encoder (+ cache), then 9 batched decoder steps over all slices."""
    zs = list(gts)
    embeddings = [e for _, e in stream_embeddings(encoder, volume, indices=zs, cache=cache)]
    records = run_slices(decoder, np.concatenate(embeddings), [gts[z] for z in zs], "points-putz")
    return dict(zip(zs, records, strict=True))


IOU_ATOL = 1e-3  # per mask, fast path vs naive
# A mask pixel whose reference logit is this close to the 0 threshold may land on either side
# under fp32 rounding of another summation order (fp32 logits agree to ~1e-6 here).
TIE_LOGIT = 1e-4


def assert_same_protocol(expected: dict, got: dict) -> tuple[float, list[tuple[int, int, int]]]:
    """Identical points on every slice and step; returns the largest IoU difference and the
    (slice, step, mask) whose IoUs differ by more than IOU_ATOL (explained or not by ties)."""
    worst, over = 0.0, []
    for z, steps in expected.items():
        assert [s["points"] for s in got[z]] == [s["points"] for s in steps], f"slice {z}: points differ"
        for k, (a, b) in enumerate(zip(steps, got[z], strict=True)):
            for m, (x, y) in enumerate(zip(a["ious"], b["ious"], strict=True)):
                worst = max(worst, abs(x - y))
                if abs(x - y) > IOU_ATOL:
                    over.append((z, k, m))
    return worst, over


def threshold_ties(eager, encoder, decoder, volume, gts, expected: dict, over) -> list[dict]:
    """Replay each (slice, step, mask) of ``over`` on both paths and return what differs: the
    flipped pixels and the largest |reference logit| among them. The check passes only if each
    replay shows flipped pixels and every one is a threshold tie (|logit| <= TIE_LOGIT)."""
    found = []
    for z, k, m in over:
        points = expected[z][k]["points"]
        coords = np.array([p[:2] for p in points], np.float32)
        labels = np.array([p[2] for p in points], np.float32)
        eager.set_image(volume[z])
        prompt = {"point_coords": coords, "point_labels": labels, "multimask_output": True}
        ref_masks, _, ref_low = eager.predict(**prompt)
        logits = eager.postprocess_masks(ref_low[None], original_size=gts[z].shape)[0]
        embedding = encoder.backend.encode(encoder.prepare_image(volume[z])[None])
        decoder.set_image_embedding(embedding, volume[z].shape)
        fast_masks, _, _ = decoder.predict(**prompt)
        flipped = ref_masks[m] != fast_masks[m]
        found.append(
            {
                "slice": z,
                "step": k + 1,
                "mask": m,
                "gt_px": int(gts[z].sum()),
                "flipped_px": int(flipped.sum()),
                "max_abs_ref_logit_at_flips": float(np.abs(logits[m][flipped]).max(initial=0.0)),
            }
        )
    return found


@pytest.mark.benchmark(group="runtime-protocol-volume")
def test_whole_volume_points_putz(benchmark, predictors, case):
    volume, mask = case
    gts = {int(z): mask[z] for z in np.flatnonzero(mask.any(axis=(1, 2)))}
    reference = naive_volume(predictors["torch"], volume, gts)
    first = fast_volume(predictors["openvino"], predictors["onnxruntime"], volume, gts, None)
    worst, over = assert_same_protocol(reference, first)
    ties = threshold_ties(
        predictors["torch"], predictors["openvino"], predictors["onnxruntime"], volume, gts, reference, over
    )
    masks = sum(len(s["ious"]) for steps in reference.values() for s in steps)
    print(f"IoU within {IOU_ATOL} on {masks - len(over)} of {masks} masks; over it: {ties}")
    # each mask past IOU_ATOL must replay with flipped pixels, and all of them threshold ties
    assert all(t["flipped_px"] and t["max_abs_ref_logit_at_flips"] <= TIE_LOGIT for t in ties), ties
    warm = EmbeddingCache(max_bytes=1 << 30)
    variants = {
        "naive": lambda: naive_volume(predictors["torch"], volume, gts),
        "samfast": lambda: fast_volume(predictors["openvino"], predictors["onnxruntime"], volume, gts, None),
        "samfast-rerun-cached": lambda: fast_volume(
            predictors["openvino"], predictors["onnxruntime"], volume, gts, warm
        ),
    }
    before = load_average()
    with CpuWatch() as watch:
        stats = benchmark.pedantic(
            interleaved, args=(variants, 2), kwargs={"warmup": 0}, rounds=1, iterations=1
        )
    record(
        benchmark,
        f"points-putz, 9 points, all {len(gts)} tumour slices of {CASE}: seconds per volume",
        stats,
        watch,
        slices=len(gts),
        decoder_calls_per_step="onnxruntime: one per slice (graph takes one embedding); torch: one per step",
        identical_points=True,
        max_iou_delta=worst,
        masks_compared=masks,
        masks_over_iou_atol=ties,
        tie_logit=TIE_LOGIT,
        cache=warm.stats(),
        loadavg_before=before,
    )


@pytest.mark.benchmark(group="runtime-peak-rss")
def test_peak_rss_streaming_a_whole_volume(benchmark, threads, bench_engine_dir):
    """Peak RSS of a fresh process streaming all 155 slices and running the protocol on the tumour."""
    script = os.path.join(os.path.dirname(__file__), "peak_rss.py")

    def run() -> dict:
        done = subprocess.run(
            [sys.executable, script, "--threads", str(threads)], capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({"what": "peak RSS, whole volume through the protocol", **result})
    print(f"peak RSS: {result['peak_rss_mib']:.0f} MiB over {result['slices_streamed']} slices")
