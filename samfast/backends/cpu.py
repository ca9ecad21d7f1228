"""What this CPU runs natively: its model name and the instruction-set flags reduced precisions need.

Read from /proc/cpuinfo (Linux); elsewhere nothing is claimed, so reduced precisions are refused.
"""

from __future__ import annotations

import functools
import os

# bf16 matrix products in hardware: AVX-512 BF16 (e.g. AMD Zen 4, Intel Cooper Lake on) or AMX.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Flags worth recording in a machine profile: a profile measured on other hardware does not apply.
PROFILE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = "unknown CPU", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (tests monkeypatch this to stand in for another CPU)."""
    return _cpuinfo()[1]


def cores(threads: int | None = None) -> int:
    """``threads`` when given, else the cores this process may run on (its affinity, not the host's)."""
    if threads:
        return int(threads)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)
