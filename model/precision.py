"""Which floating-point type a model runs in when the caller names none.

    auto_dtype(torch.device("cuda"))   bfloat16
    auto_dtype(torch.device("cpu"))    float32, or what A3_CPU_DTYPE=float32|bfloat16 asks for

Why not bf16 on a CPU, even one with native bf16 (AVX512-BF16 or AMX-BF16): bf16 does not keep greedy
outputs. `python -m bench.precision --json` (the default model, 16 test stories and their blanks) measured
next-token agreement with float32 of 97.7% teacher-forced, but only 50% of the greedy A3-plan fills identical
(68% of their tokens), and plan decoding with the content cache no longer chose exactly the tokens of a full
recompute (rounding differs with the batch shape and flips near-ties); the app shows exact log-probabilities
and checks cached against recomputed decoding. On the development machine (AVX2, no native bf16) bf16 is
also slower: 122 ms per decoding step against 86 ms. `cpu_native_bf16` reports the CPU's flags (the bench
prints them), so the measurement can be repeated where bf16 is native; A3_CPU_DTYPE=bfloat16 opts in.
`load_model(..., dtype=...)` overrides everything.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU has bf16 arithmetic of its own (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def auto_dtype(device: torch.device) -> torch.dtype:
    """The default dtype for a model on `device` (see the module docstring)."""
    if device.type == "cuda":
        return torch.bfloat16
    choice = os.environ.get("A3_CPU_DTYPE", "").strip().lower()
    if choice in ("", "auto"):
        return torch.float32
    if choice not in CPU_DTYPES:
        raise ValueError(f"A3_CPU_DTYPE={choice!r}: use float32, bfloat16 or auto (float32).")
    return CPU_DTYPES[choice]


def precision_note(device: torch.device, dtype: torch.dtype) -> str:
    """The dtype, and on a CPU in bf16 that it is not exact (a few words for the page's header)."""
    name = str(dtype).removeprefix("torch.")
    if device.type == "cpu" and dtype == torch.bfloat16:
        return f"{name}: greedy fills may differ from float32"
    return name
