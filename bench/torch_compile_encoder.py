"""torch.compile (Inductor, freezing) against OpenVINO for the LiteMedSAM encoder on the CPU: ms per
slice, fp32 and bf16, side by side in one run, each engine's embeddings compared with torch eager's.

The real LiteMedSAM weights, one (1, 3, 256, 256) slice a call (seeded random slices in [0, 1], the
range min-max preprocessing gives). Modes: torch eager fp32 (the reference, inference_mode);
torch.compile fp32 and bf16 with ``torch._inductor.config.freezing`` (bf16 both as a bf16 copy of
the model and as fp32 weights under CPU autocast), for each ``--inductor-mode`` (default: "default"
and "max-autotune-no-cudagraphs", which benchmarks Inductor's C++ GEMM templates against oneDNN for
every matrix product while compiling); OpenVINO bf16 and fp32 on the exported
encoder.onnx compiled as OpenVinoBackend compiles it (static shape, PERFORMANCE_HINT LATENCY,
``--threads`` threads). torch runs on ``--threads`` threads too. Each compiled mode's first call
(compile included) is timed on its own; then the modes take turns, the order rotating each round,
and the medians over rounds are reported. Inductor compiles into a fresh cache folder so its
compile seconds are a first user's. One JSON line is printed and written to ``--out``.

    flock /work/notes/bench.lock .venv/bin/python bench/torch_compile_encoder.py --out run.json
    .venv/bin/python bench/torch_compile_encoder.py --slices 1 --rounds 1 --inductor-mode default
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIDE = 256
EAGER = "torch eager fp32"


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
        "unknown",
    )


def torch_modes(encoder, inductor_modes: list[str], skip: list[str]) -> dict[str, Callable[[], Callable]]:
    """Builders of per-slice callables (numpy slice (1, 3, H, W) -> fp32 numpy embedding); each
    compiled mode gets its own copy of the encoder, as freezing folds the weights into its graph."""
    import torch
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    # Every compiled copy adds cache entries to the same forward; past the limit Dynamo would
    # quietly run the copy eagerly.
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 8 * len(inductor_modes))

    def runner(module, dtype=None, autocast: bool = False):
        def run(image: np.ndarray) -> np.ndarray:
            tensor = torch.from_numpy(image)
            if dtype is not None:
                tensor = tensor.to(dtype)
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
                return module(tensor).float().numpy()

        return run

    def compiled(mode: str, dtype=None, autocast: bool = False) -> Callable:
        module = copy.deepcopy(encoder)
        if dtype is not None:
            module = module.to(dtype)
        return runner(torch.compile(module, mode=mode), dtype, autocast)

    builders = {EAGER: lambda: runner(encoder)}
    for mode in inductor_modes:
        builders |= {
            f"torch.compile fp32 [{mode}]": lambda m=mode: compiled(m),
            f"torch.compile bf16 bf16-weights [{mode}]": lambda m=mode: compiled(m, dtype=torch.bfloat16),
            f"torch.compile bf16 autocast [{mode}]": lambda m=mode: compiled(m, autocast=True),
        }
    return {
        name: build for name, build in builders.items() if name == EAGER or not any(s in name for s in skip)
    }


def openvino_modes(encoder_onnx: Path, threads: int, skip: list[str]) -> dict[str, Callable[[], Callable]]:
    from openvino_layers import compile_encoder

    def build(precision: str) -> Callable:
        request = compile_encoder(
            encoder_onnx, precision, threads, {"PERF_COUNT": False}
        ).create_infer_request()
        return lambda image: np.array(request.infer({0: image})[0], np.float32)

    names = {f"openvino {p}": p for p in ("bf16", "fp32")}
    return {name: (lambda p=p: build(p)) for name, p in names.items() if not any(s in name for s in skip)}


def run_slices(run: Callable, slices: np.ndarray) -> np.ndarray:
    return np.concatenate([run(slices[i : i + 1]) for i in range(len(slices))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--encoder", type=Path, help="encoder.onnx for OpenVINO (default: the LiteMedSAM set's)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--inductor-mode",
        action="append",
        help="torch.compile mode, repeatable (default: default and max-autotune-no-cudagraphs)",
    )
    parser.add_argument(
        "--skip", action="append", default=[], help="leave out modes whose name contains this"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON line here")
    parser.add_argument(
        "--keep-cache", action="store_true", help="use Inductor's usual cache (warm compiles)"
    )
    args = parser.parse_args()
    if args.slices < 1 or args.rounds < 1 or args.threads < 1:
        print("--slices, --rounds and --threads must be at least 1", file=sys.stderr)
        return 2
    cache = None
    if not args.keep_cache:  # set before torch reads its Inductor config
        cache = tempfile.mkdtemp(prefix="inductor-cold-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache

    import openvino as ov
    import torch

    from samfast.backends.cpu import cpu_model
    from samfast.models import build_model

    args.inductor_mode = args.inductor_mode or ["default", "max-autotune-no-cudagraphs"]
    torch.set_num_threads(args.threads)
    encoder = build_model("litemedsam").image_encoder.eval()
    builders = torch_modes(encoder, args.inductor_mode, args.skip)
    if args.encoder is None and not all(
        any(s in f"openvino {p}" for s in args.skip) for p in ("bf16", "fp32")
    ):
        from openvino_layers import default_encoder

        args.encoder = default_encoder()
    # OpenVINO's graphs first: the eager reference, then the quick builds, then the long compiles.
    eager = builders.pop(EAGER)
    builders = {EAGER: eager} | openvino_modes(args.encoder, args.threads, args.skip) | builders

    slices = np.random.default_rng(0).random((args.slices, 3, SIDE, SIDE), dtype=np.float32)
    modes: dict[str, Callable] = {}
    facts: dict[str, dict] = {}
    reference = None
    for name, build in builders.items():  # build, first call (compile), then every slice once
        start = time.perf_counter()
        try:
            run = build()
            run(slices[:1])
        except Exception as error:  # a failed compile is a result: say what failed, go on
            facts[name] = {"failed": f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:500]}"}
            traceback.print_exc()
            continue
        first = time.perf_counter() - start
        out = run_slices(run, slices)
        reference = out if name == EAGER else reference
        modes[name] = run
        facts[name] = {
            "compile_and_first_call_s": round(first, 2),
            "max_abs_diff_vs_eager": float(np.abs(out - reference).max()),
            "max_abs_diff_relative": float(np.abs(out - reference).max() / np.abs(reference).max()),
        }
        print(f"{name}: first call {first:.1f} s", file=sys.stderr, flush=True)

    names = list(modes)
    times: dict[str, list[float]] = {name: [] for name in names}
    load_before, uptime_before = os.getloadavg(), subprocess.getoutput("uptime")
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            run_slices(modes[name], slices)
            times[name].append((time.perf_counter() - start) * 1e3 / args.slices)
    load_after, uptime_after = os.getloadavg(), subprocess.getoutput("uptime")
    eager_ms = statistics.median(times[EAGER])
    for name in names:
        ms = statistics.median(times[name])
        facts[name] |= {
            "ms_per_slice": round(ms, 1),
            "best_ms_per_slice": round(min(times[name]), 1),
            "speedup_vs_eager_fp32": round(eager_ms / ms, 3),
        }
    bf16_compiled = [n for n in names if n.startswith("torch.compile bf16")]
    best_compiled = min(bf16_compiled, key=lambda n: facts[n]["ms_per_slice"], default=None)
    verdict = None
    if best_compiled and "openvino bf16" in modes:
        ratio = facts["openvino bf16"]["ms_per_slice"] / facts[best_compiled]["ms_per_slice"]
        verdict = {
            "best_torch_compile_bf16": best_compiled,
            "its_speedup_over_openvino_bf16": round(ratio, 3),
        }
    result = {
        "what": "LiteMedSAM encoder, one (1,3,256,256) slice a call, ms per slice (median over rounds)",
        "cpu": cpu_model(),
        "lscpu_model_name": lscpu_model(),
        "threads": args.threads,
        "slices": args.slices,
        "rounds": args.rounds,
        "inductor_modes": args.inductor_mode,
        "inductor_freezing": True,
        "inductor_cache": "warm (usual folder)" if args.keep_cache else "cold (fresh folder)",
        "torch": torch.__version__,
        "openvino": ov.get_version(),
        "load_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "uptime_before": uptime_before,
        "uptime_after": uptime_after,
        "modes": facts,
        "verdict": verdict,
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(line + "\n")
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
