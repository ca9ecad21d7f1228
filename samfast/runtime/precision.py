"""Which backend and precision a Predictor runs: the user's choice, the machine profile, or fp32.

``precision`` is one of PRECISIONS. fp32 is the reference; a reduced precision is offered where the
hardware runs it natively and it passed the task accuracy gate (samfast.eval.parity.TASK_GATE):
bf16 on CPUs with AVX-512 BF16 or AMX, fp16 / bf16 on CUDA. ``auto`` takes the fastest
configuration `samfast tune` measured as passing on this machine (the machine profile, which the
caller loads and hands in: nothing here reads ~/.cache), else the fp32 reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from samfast.errors import InputError

logger = logging.getLogger(__name__)
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
DEFAULT_BACKEND = "onnxruntime"
# device kind -> precision -> backends that run it natively, fastest first (bench/README.md,
# "Reduced precisions": on the CPU OpenVINO's bf16 beats torch/oneDNN's autocast, and ONNX Runtime
# has no bf16 kernels on x86).
NATIVE_BACKENDS = {
    "cpu": {"bf16": ("openvino", "torch")},
    "cuda": {"fp16": ("torch", "tensorrt"), "bf16": ("torch",)},
}
# int8 is kept only once it passes the gate. Measured (bench/README.md, precision study): NNCF
# post-training int8 of the encoder lands far from fp32, so it is refused until it does.
INT8_REFUSAL = (
    "int8 is not offered: NNCF int8 of the LiteMedSAM encoder was measured far from fp32 on the "
    "demo slices (5 % of masks within Dice 0.99 of fp32, min Dice 0.00, embedding error 0.285; "
    "bench/README.md); it is kept only once it passes the task accuracy gate; use bf16 or fp32"
)


@dataclass(frozen=True)
class Choice:
    backend: str
    precision: str
    source: str  # "given", "profile" or "fallback": for the log line and reports


def _refuse_unnative(kind: str, precision: str, backend: str | None) -> tuple[str, ...]:
    from samfast.backends.cpu import cpu_model, native_bf16

    if precision == "int8":
        raise InputError(INT8_REFUSAL)
    native = NATIVE_BACKENDS.get(kind, {}).get(precision)
    if native is None:
        where = "a CUDA GPU" if precision == "fp16" else "a CPU with AVX-512 BF16 or AMX, or CUDA"
        raise InputError(f"precision {precision} on {kind} is not supported; it needs {where}")
    if kind == "cpu" and precision == "bf16" and not native_bf16():
        raise InputError(
            f"this CPU ({cpu_model()}) has no native bf16 (AVX-512 BF16 or AMX): bf16 would be "
            "emulated and slower than fp32; use --precision fp32"
        )
    if backend is not None and backend not in native:
        raise InputError(
            f"backend {backend} has no native {precision} on {kind}; {precision} runs on "
            f"{' or '.join(native)} (leave --backend out for the fastest)"
        )
    return native


def resolve(
    backend: str | None,
    device: str = "cpu",
    precision: str | None = None,
    profile: dict | None = None,
    log: Callable[[str], None] | None = None,
    model: str | None = None,
) -> Choice:
    """The backend and precision to build. ``None`` means not given: with a ``profile`` and no
    backend either, the profile's pick; otherwise fp32 on ``backend`` or the default."""
    kind = str(device).split(":")[0]
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} unknown; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto" or (precision is None and backend is None and profile is not None):
        from samfast.runtime.profile import pick

        chosen = pick(profile, kind, backend, model)
        if chosen is not None:
            return Choice(chosen["backend"], chosen["precision"], "profile")
        if precision == "auto":
            (log or logger.info)(
                "no machine profile passed here for this device (run `samfast tune`): fp32 reference"
            )
        return Choice(backend or DEFAULT_BACKEND, "fp32", "fallback")
    if precision in (None, "fp32"):
        return Choice(backend or DEFAULT_BACKEND, "fp32", "given")
    native = _refuse_unnative(kind, precision, backend)
    if backend is None:
        import importlib.util

        installed = [b for b in native if b == "torch" or importlib.util.find_spec(b) is not None]
        backend = (installed or native)[0]
    return Choice(backend, precision, "given")
