"""Which precision a model runs in when the caller names none.

    auto_dtype(torch.device("cuda"))   bfloat16
    auto_dtype(torch.device("cpu"))    float32, or what A3_CPU_DTYPE=float32|bfloat16|int8 asks for

torch.int8 stands for model.quant's scheme: int8 weights per output channel and int8 activations per token
(dynamic), float32 everywhere else (embeddings, norms, attention, the query vector, outputs). It is opt-in
and labelled "faster, greedy fills differ" (INT8_NOTE): `python -m bench.int8_gate --json` (the default
model, 4 test stories x 4 blanks + 8 general blanks, a3_plan / a3_outside_in / a3_dynamic) found 11% of its
fills identical to float32 (the gate asks 90%), perplexities 3-7% higher and paired intervals off 0, for a
decoding step 1.3x faster on 1 thread (60 -> 47 ms; 84 -> 62 ms on the AVX2 kernels) and 1.09x on 2.
Keeping the LM head, the first and last layers, or the most sensitive projections in float32 kept at most
29% of the fills and gave up most of the speed (model.quant's docstring has the table).

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
CPU_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
              "int8": torch.int8}
DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
               "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "int8": torch.int8}
# what the page's header says about int8 until bench.int8_gate passes (it changes greedy fills: see the gate)
INT8_NOTE = "int8 (per-channel weights, per-token activations): faster, greedy fills differ from float32"


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
        raise ValueError(f"A3_CPU_DTYPE={choice!r}: use float32, bfloat16, int8 or auto (float32).")
    return CPU_DTYPES[choice]


def as_dtype(dtype) -> torch.dtype | None:
    """A dtype from a torch.dtype or its name ("float32", "bf16", "int8", ...); None stays None. torch.int8
    means model.quant's int8 scheme. Raises ValueError naming the choices for anything else."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in set(DTYPE_NAMES.values()):
            raise ValueError(f"dtype {dtype}: use float32, bfloat16, float16 or int8.")
        return dtype
    name = str(dtype).strip().lower().removeprefix("torch.")
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype {dtype!r}: use float32, bfloat16, float16 or int8.")
    return DTYPE_NAMES[name]


def precision_note(device: torch.device, dtype: torch.dtype) -> str:
    """The precision, and where it is not exact that greedy fills may differ (a few words for the page's
    header). dtype: the weights' dtype (LoadedModel.weight_dtype: torch.int8 for model.quant's scheme)."""
    name = str(dtype).removeprefix("torch.")
    if dtype == torch.int8:
        return INT8_NOTE
    if device.type == "cpu" and dtype == torch.bfloat16:
        return f"{name}: greedy fills may differ from float32"
    return name
