"""8-bit weights for CPU decoding: int8 per output channel, activations quantized per token on the fly.

    quantize_model(model)                     every nn.Linear but the kept ones becomes an Int8Linear (in place)
    quantize_model(model, keep=("lm_head",))  the LM head stays float32 too
    load_model("default", dtype="int8")       the same through model.loading (A3_CPU_DTYPE=int8 on a CPU)

The scheme ("int8"): each weight row (output channel) o gets its own scale s_w[o] = max|W[o, :]| / 64 and
W_q = round(W / s_w), in int8 but within -64..64 (see below). At every call each input row r (one position
of one sequence) gets its own scale s_x[r] = max|x[r, :]| / 127 and x_q = round(x / s_x) in -127..127; then
y = (x_q @ W_q^T) * s_w[o] * s_x[r] + b, the integer product exact in int32 (`torch._int_mm`). Output,
bias, norms, embeddings, attention and the query vector stay float32.

Why weights within -64..64: on a CPU without VNNI (AVX2, the reference CPU; AVX-512 without VNNI too)
oneDNN's int8 kernels (behind `torch._int_mm`) add pairs of u8 x s8 products in int16 with saturation
(vpmaddubsw), after shifting the signed activations by 128. With full-range int8 weights the sums saturate
and the "exact" integer product is wrong by up to 20% (measured under ONEDNN_MAX_CPU_ISA=AVX2: errors of
80,000 on sums of 400,000 with random int8 operands). With |W_q| <= 64 a pair sums to at most 2 * 255 * 64 =
32,640 < 32,767: exact on every x86 CPU, so every machine computes the same bits.

Why per token: one activation scale for the whole batch would make each position's result depend on the
other positions computed with it (a different batch, a different scale): a leak across positions, and a
cached step (a few rows) would no longer compute what a full recompute (every row) does. Here a row's
quantization reads that row only, and the integer product is exact whatever the batch, so each row's
output is the same bits alone or in any batch (tests/test_quant.py checks it). Weight-only int8 through
`torch._weight_int8pack_mm` measured 3.5-12x slower than float32 F.linear (1 and 2 rows; 1536x576, 576x1536
and the 49152x576 LM head; the native and the AVX2 kernels alike), so the activations are quantized too.

`keep` names what stays float32, as globs over the Linear modules' names ("lm_head",
"model.layers.0.*", "*.k_proj") or the aliases "first" and "last" (the first / last transformer layer).
What to keep is measured by `python -m bench.int8_gate`.

What it gives (the default model; a 2-core AVX-512/VNNI machine shared with other jobs, 1 thread, float32 and
int8 interleaved, the fastest of 3-5 rounds; "AVX2" = the same machine with ONEDNN_MAX_CPU_ISA=AVX2,
ATEN_CPU_CAPABILITY=avx2 and MKL_ENABLE_INSTRUCTIONS=AVX2, the reference CPU's kernels):
  - one Linear: 1.6-1.8% relative error per row (7-bit weights, 8-bit activations; 1.0-1.1% with 8-bit
    weights, which AVX2 cannot multiply exactly). Against F.linear at 1 / 2 / 4 / 16 rows: the MLP's 1536x576
    and 576x1536 1.2-1.4x / 1.1-1.2x / 2.1-2.6x / 2.7-2.9x (AVX2: 0.8x / 1.3-1.4x / 1.3x / 1.4-1.5x), the
    49152x576 LM head 2.0x / 1.9x / 2.7x / 3.4x (AVX2: 1.2x / 2.3x / 2.1x / 1.9x); 576x576 and 192x576 are
    slower below 16 rows (0.2-0.5x): quantizing the rows and rescaling the product costs ~50 us a call;
  - a decoding step (bench.app's: A3 plan, left to right, 128 tokens, 64 open): 60 -> 47 ms (1.28x);
    AVX2: 84 -> 62 ms (1.35x); on 2 threads 36 -> 33 ms (1.09x: the per-call work does not parallelize);
  - teacher-forced next token (6 test stories, LM head float32): 86% the float32 argmax, mean KL 0.035; the
    weights alone (float32 activations) 96.5%, the activations alone 88%. The base's projections are the
    dequantized Q4_1 GGUF plus the merged LoRA: no per-channel 8-bit grid holds them;
  - bench.int8_gate, 4 test stories x 4 blanks + 8 general blanks, 3 decoders (72 fills), keep-sets:
        float32 kept              int8 Linears  identical fills   perplexity int8/fp32   step
        nothing (DEFAULT_KEEP)    211           11% (2% / 29%)    1.03-1.07              1.59x
        lm_head                   210            7%               1.02-1.05              1.26x
        first, last               197            7%               1.03-1.10              1.32x
        lm_head, first, last      196           21% (6% / 50%)    1.02-1.06              1.27x
        lm_head, v/up/down_proj   120           29% (13% / 63%)   1.001-1.009            1.04x
    (stories / general in brackets). The gate (90% identical, intervals holding 0, perplexity within 2%)
    fails for every keep-set, so float32 stays the default and int8 an opt-in that changes fills.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SCHEME = "int8"  # int8 weights per output channel, dynamic per-token int8 activations
QUANT_VERSION = 1  # bump when what quantize_model computes changes (on-disk caches are keyed by it)
DEFAULT_KEEP: tuple[str, ...] = ()  # measured by bench.int8_gate; see model.precision
ALIASES = ("first", "last")
QMAX = 127  # activations: symmetric -127..127 (never -128)
QMAX_WEIGHT = 64  # weights: -64..64, so pairs of products never saturate int16 on AVX2 (module docstring)
_TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class Quantization:
    """What quantize_model did to a model (kept on it as `model.a3_quantization`)."""

    scheme: str
    keep: tuple[str, ...]  # as asked for (globs and aliases), sorted
    kept: tuple[str, ...]  # the Linear modules left in float32
    quantized: int  # how many Linear modules became Int8Linear
    version: int = QUANT_VERSION

    @property
    def name(self) -> str:
        """e.g. "int8" or "int8 (float32: first, lm_head)"."""
        return f"{self.scheme} (float32: {', '.join(self.keep)})" if self.keep else self.scheme

    @property
    def key(self) -> str:
        """A string naming exactly what was computed (for caches): scheme, kept modules and version."""
        return f"{self.scheme}-v{self.version}:keep={','.join(self.kept)}"


# --------------------------------------------------------------------------------------------------
# the integer product


def int_mm_ok(a: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether `torch._int_mm(a, w.T)` runs for int8 a (M, K) and w (N, K). On a CPU it takes any size
    (checked on torch 2.13, M = 0 and odd K included) once each row is contiguous in memory (int_matmul sees
    to it: otherwise torch warns and falls back to a slow gemm); CUDA needs M > 16 and K, N multiples of 8.
    Elsewhere `int_matmul` computes the same integers another way."""
    if a.device.type == "cpu":
        return True
    if a.device.type == "cuda":
        return a.shape[0] > 16 and a.shape[1] % 8 == 0 and w.shape[0] % 8 == 0
    return False


def int_matmul(a: torch.Tensor, w: torch.Tensor, *, force_fallback: bool = False) -> torch.Tensor:
    """a (M, K) int8 times w (N, K) int8 transposed: (M, N) int32, exactly.

    `torch._int_mm` where it runs; otherwise the same product in float64, which holds every partial sum
    exactly (|a_i w_i| <= 127^2, so up to K = 2^53 / 127^2 terms), so both paths give the same integers."""
    if not force_fallback and int_mm_ok(a, w):
        a = a if a.stride(-1) == 1 else a.contiguous()  # oneDNN takes no other innermost stride
        w = w if w.stride(-1) == 1 else w.contiguous()
        try:
            return torch._int_mm(a, w.t())
        except RuntimeError:  # a backend that refuses this shape after all: the exact path below
            pass
    return (a.double() @ w.t().double()).to(torch.int32)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: x (M, K) float -> (x_q (M, K) int8, scale (M, 1) float32), x ~ x_q * scale.

    Every row reads only itself (its own max |x|), so a row quantizes to the same bits in any batch. A
    row of zeros gets scale `tiny` and x_q = 0 (its product is exactly 0, as in float32)."""
    x = x.float()
    amax = x.abs().amax(dim=-1, keepdim=True)  # twice as fast as vector_norm(ord=inf) on small rows
    scale = amax.clamp_min(_TINY * QMAX) / QMAX
    return torch.round(x / scale).to(torch.int8), scale


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric: weight (N, K) -> (W_q (N, K) int8 within -64..64, scale (N,) float32)."""
    weight = weight.detach().float()
    amax = weight.abs().amax(dim=1)
    scale = amax.clamp_min(_TINY * QMAX_WEIGHT) / QMAX_WEIGHT
    w_q = torch.round(weight / scale[:, None]).clamp_(-QMAX_WEIGHT, QMAX_WEIGHT)
    return w_q.to(torch.int8).contiguous(), scale


# --------------------------------------------------------------------------------------------------
# the module


class Int8Linear(nn.Module):
    """A drop-in for nn.Linear with int8 weights (per output channel) and per-token dynamic int8 activations.

    Input (..., in_features) in any float dtype; output (..., out_features) in the input's dtype, computed
    in float32. Every leading position (batch, sequence) is quantized on its own. The int8 weights and
    their scales are parameters (requires_grad False), so `model.parameters()`, `.to(device)` and weight
    checksums see them; `.to(dtype)` leaves the int8 weights alone (only floating tensors are cast).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_int8 = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch.int8, device=device),
                                        requires_grad=False)
        self.weight_scale = nn.Parameter(torch.ones(out_features, dtype=torch.float32, device=device),
                                         requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        with torch.device("meta"):
            module = cls(linear.in_features, linear.out_features, linear.bias is not None)
        w_q, scale = quantize_weight(linear.weight)
        module.weight_int8 = nn.Parameter(w_q, requires_grad=False)
        module.weight_scale = nn.Parameter(scale.contiguous(), requires_grad=False)
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        return module

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight this module multiplies by (W_q * scale), (out, in)."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        x_q, x_scale = quantize_rows(rows)
        y = int_matmul(x_q, self.weight_int8) * self.weight_scale  # int32 * float32 -> float32, (M, N)
        y = y.mul_(x_scale)
        if self.bias is not None:
            y = y.add_(self.bias.float())
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def reference_linear(module: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """What an Int8Linear computes, spelled out in float64 one row at a time (for tests)."""
    out = []
    for row in x.reshape(-1, module.in_features).float():
        scale = row.abs().max().clamp_min(_TINY * QMAX) / QMAX  # float32, as the module computes it
        x_q = torch.round(row / scale).double()
        y = (module.weight_int8.double() @ x_q) * module.weight_scale.double() * scale.double()
        out.append(y + (module.bias.double() if module.bias is not None else 0))
    return torch.stack(out).reshape(*x.shape[:-1], module.out_features)


# --------------------------------------------------------------------------------------------------
# a model


def _n_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "num_hidden_layers", None)


def resolve_keep(model: nn.Module, keep: Iterable[str]) -> list[str]:
    """The Linear modules of `model` that `keep` names (globs over module names, or "first" / "last").
    Raises ValueError for an entry that names no Linear module (a typo must not quantize silently)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, Int8Linear))]
    n_layers = _n_layers(model)
    kept: set[str] = set()
    for entry in keep:
        pattern = entry.strip()
        if pattern in ALIASES:
            if not n_layers:
                raise ValueError(f"keep={entry!r}: the model has no config.num_hidden_layers to find its layers.")
            pattern = f"model.layers.{0 if pattern == 'first' else n_layers - 1}.*"
        hits = [name for name in linears if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise ValueError(f"keep={entry!r} names no Linear module of this model (they are named like "
                             f"{linears[:1] + linears[-1:]}; aliases: {', '.join(ALIASES)}).")
        kept.update(hits)
    return sorted(kept)


def quantize_model(model: nn.Module, keep: Iterable[str] = DEFAULT_KEEP) -> nn.Module:
    """Replace every nn.Linear of `model` except the kept ones by an Int8Linear, in place (the model's
    weights are read as they are: merge a LoRA adapter first, as model.loading does). Returns the model,
    with `model.a3_quantization` (a Quantization) saying what was done. Quantizing twice is refused."""
    if getattr(model, "a3_quantization", None) is not None:
        raise ValueError(f"the model is quantized already ({model.a3_quantization.name}).")
    keep = tuple(sorted({k.strip() for k in keep}))
    kept = resolve_keep(model, keep)
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in kept]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear.from_linear(linear))
    model.a3_quantization = Quantization(SCHEME, keep, tuple(kept), len(targets))
    return model


def quantization_of(model: nn.Module) -> Quantization | None:
    """What quantize_model did to `model` (None: not quantized)."""
    return getattr(model, "a3_quantization", None)


def linear_max_relative_error(module: Int8Linear, linear: nn.Linear, x: torch.Tensor) -> float:
    """max over rows of |Int8Linear(x) - F.linear(x)| / |F.linear(x)| (row norms), for reports."""
    with torch.no_grad():
        ref = F.linear(x.float(), linear.weight.float(), None if linear.bias is None else linear.bias.float())
        got = module(x.float())
        return float(((got - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-12)).max())


# --------------------------------------------------------------------------------------------------
# on disk: safetensors only (no pickle)

FORMAT = "a3-int8"


def quantized_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What save_quantized writes: every tensor of the state dict (an LM head tied to the embeddings once)
    and metadata naming the scheme, the config and the torch version."""
    quant = quantization_of(model)
    if quant is None:
        raise ValueError("the model is not quantized (model.quant.quantize_model first).")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tied = isinstance(getattr(model, "lm_head", None), nn.Linear) and hasattr(model, "get_input_embeddings") \
        and model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if tied:
        state.pop("lm_head.weight", None)
    meta = {"format": FORMAT, "scheme": quant.scheme, "keep": json.dumps(list(quant.keep)),
            "kept": json.dumps(list(quant.kept)), "version": str(quant.version), "tied_lm_head": str(int(tied)),
            "config": model.config.to_json_string(use_diff=False), "torch": torch.__version__}
    return state, meta


def save_quantized(model: nn.Module, path: str | Path) -> Path:
    """Write a quantized A3 model as one safetensors file (written to a temporary name, then renamed, so a
    reader never sees half a file)."""
    from safetensors.torch import save_file

    path = Path(path)
    state, meta = quantized_tensors(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.cpu() for k, v in state.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_quantized(path: str | Path, *, device="cpu"):
    """An A3ForAnyOrderLM from save_quantized's file (safetensors; nothing is unpickled). Raises ValueError
    for a file of another format or quantization version."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from model.modeling import A3Config, A3ForAnyOrderLM
    from model.network import rotary_embedding

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT or meta.get("version") != str(QUANT_VERSION):
        raise ValueError(f"{path}: not an {FORMAT} file of version {QUANT_VERSION} "
                         f"(format {meta.get('format')!r}, version {meta.get('version')!r}).")
    config = A3Config.from_dict(json.loads(meta["config"]))
    kept = set(json.loads(meta["kept"]))
    with torch.device("meta"):
        model = A3ForAnyOrderLM(config)
    for name, linear in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in kept]:
        parent_name, _, child = name.rpartition(".")
        with torch.device("meta"):
            module = Int8Linear(linear.in_features, linear.out_features, linear.bias is not None)
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
    state = load_file(str(path), device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = meta.get("tied_lm_head") == "1"
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{path}: the tensors do not fit the config (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}).")
    model.model.rotary_emb = rotary_embedding(config).to(device)  # buffers are not saved
    if tied:
        model.lm_head.weight = model.get_input_embeddings().weight
    keep = tuple(json.loads(meta["keep"]))
    model.a3_quantization = Quantization(meta["scheme"], keep, tuple(sorted(kept)),
                                         sum(isinstance(m, Int8Linear) for m in model.modules()))
    return model.eval()


def cache_file(directory: str | Path, *sources: str, keep: Iterable[str] = DEFAULT_KEEP) -> Path:
    """Where the quantized weights of a model made from `sources` (content hashes: the base's weights, the
    adapter's files) are kept in `directory`: the name hashes the sources, the scheme, its version, what
    stays float32 and the torch version, so any change of one quantizes afresh."""
    parts = [*sources, SCHEME, str(QUANT_VERSION), ",".join(sorted(keep)), torch.__version__]
    return Path(directory) / f"a3-{SCHEME}-{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:16]}.safetensors"
