"""float32 Linear layers with their weights pre-packed for oneDNN: a CPU decoding step's small products.

    pack_linears(model)          every nn.Linear of an inference model keeps a oneDNN-packed copy of its weight
    A3_PACKED_LINEAR=0           leaves the model as it is (torch's own F.linear everywhere)

A decoding step multiplies 1 to 2 rows by each of the 211 weight matrices (7 per layer, the LM head); at
that shape torch's F.linear (MKL's sgemm) reads the weights at 8-9 GB/s on the reference CPU (2-core AMD
EPYC, AVX2) and gains nothing from a second thread, while the read bandwidth is ~30 GB/s. oneDNN's
inner-product kernel on a weight reordered once into its blocked layout (`torch.ops.mkldnn.
_reorder_linear_weight`, the layout torch's compiler uses for frozen CPU weights) reads them at 16-17 GB/s
on 2 threads, and 20.8 GB/s with q, k and v (and gate and up) as one matrix: the default 64-token decode
went from 5.3 to 3.1 s there, the same tokens (docs/benchmarks.md). From about 256 rows on (a whole
text's forward, training) MKL is as fast or faster, so rows above PACKED_MAX_ROWS, and anything that
needs gradients, go to F.linear.

The module stays an nn.Linear (the same `weight` Parameter, the same state_dict, what model.quant and hooks
read); the packed copy is a plain attribute, not a buffer, made again whenever the weight is changed in
place through autograd's view of it (`weight.mul_`, `load_state_dict`, `copy_`: its version moves),
replaced, or moved (`model.to(...)` drops the copies); a fused product also follows its biases. A write
through `weight.data` is invisible to torch's version counter: code that edits weights that way (peft's
merge does) calls `repack(model)` after, or works on an unpacked model (`unpack_linears`; load_model's
adapter merge does). Results agree with F.linear to float32 rounding (~1e-6 on unit-scale rows): not bit
for bit, as F.linear itself is not across row counts; decoding's checks (cached against recomputed, the
likelihood identity) hold within the tolerances they already had. Where this torch has no oneDNN (or its
reorder fails on a trial matrix), or the model is not float32 on a CPU, nothing is packed. The packed
copies cost the weights' size again in memory (538 MB for the default model; bench.app's peak RSS 1.04 ->
1.64 GB): q, k and v, and gate and up, are packed once, as one matrix each.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

ENV = "A3_PACKED_LINEAR"
PACKED_MAX_ROWS = 128  # at 256 rows and more, F.linear was measured as fast or faster (docs/benchmarks.md)
_PACK_HINT = 2  # the row count the layout is chosen for: a decoding step's rows


def enabled(environ=None) -> bool:
    """Whether pack_linears packs: yes unless A3_PACKED_LINEAR is 0 (or false, no, off). Any other value
    than those and 1 / true / yes / on / auto / empty raises ValueError saying what is accepted."""
    raw = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("", "1", "true", "yes", "on", "auto"):
        return True
    raise ValueError(f"{ENV}={raw!r}: use 1 (pack float32 Linear weights for oneDNN on a CPU, the default) "
                     "or 0 (torch's F.linear everywhere).")


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether this torch can pack and multiply (oneDNN built in, and a trial matrix gives F.linear's result)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        weight = torch.linspace(-1.0, 1.0, 24 * 16).reshape(24, 16)
        rows = torch.linspace(1.0, -1.0, 2 * 16).reshape(2, 16)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_HINT)
        out = torch.ops.mkldnn._linear_pointwise(rows, packed, None, "none", [], "")
        return bool(torch.allclose(out, F.linear(rows, weight), atol=1e-5, rtol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _stamp(weight: torch.Tensor | None) -> tuple | None:
    return None if weight is None else (weight.data_ptr(), weight._version, weight.dtype, weight.device)


class PackedLinear(nn.Linear):
    """An nn.Linear whose float32 CPU forward of up to PACKED_MAX_ROWS rows, without gradients, runs on a
    oneDNN-packed copy of its weight. Made by pack_linears (the class of an existing module is swapped)."""

    # (the weight's stamp when packed, the packed weight): one attribute, replaced whole, so that a thread
    # never reads one version's packed weight with another's stamp
    _packing: tuple | None = None

    _generation = 0  # moves with every model.to(...) (`_apply`): a stamp then never matches an old copy
    _fused_member = False  # one of a FusedProjections' layers: called alone (its product declined), F.linear

    def __getstate__(self):  # a copy (deepcopy, pickle) packs afresh: the packed tensor cannot be copied
        return {**super().__getstate__(), "_packing": None}

    def _apply(self, fn, *args, **kwargs):
        self._packing = None  # moved or cast: the old copy goes (a new one is made on the next use)
        self._generation += 1
        return super()._apply(fn, *args, **kwargs)

    def stamp(self) -> tuple:
        """What the packed copy was made of: the weight's storage, version, dtype and device, and the
        module's generation (a storage freed by a cast and reused by the cast back has the same address)."""
        return _stamp(self.weight), self._generation

    def _pack(self) -> tuple:
        stamp = self.stamp()  # before reading it: a change meanwhile leaves a stale stamp, packed again
        packing = (stamp, torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), _PACK_HINT))
        self._packing = packing
        return packing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if self._fused_member or not _usable(x, [weight], self.in_features):
            return F.linear(x, weight, self.bias)  # (a fused member alone: no second packed copy of it)
        packing = self._packing
        if packing is None or packing[0] != self.stamp():
            packing = self._pack()
        packed = packing[1]
        bias = None if self.bias is None else self.bias.detach()
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _usable(x: torch.Tensor, weights: list[torch.Tensor], in_features: int) -> bool:
    """Whether a packed product may stand for F.linear on x (see PackedLinear.forward)."""
    return (x.dtype == torch.float32 and x.device.type == "cpu" and x.shape[-1] == in_features
            and x.numel() <= PACKED_MAX_ROWS * in_features
            and all(w.dtype == torch.float32 and w.device.type == "cpu" for w in weights)
            and not (torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights))))


class FusedProjections:
    """Several Linear layers of one module, all fed the same input (q, k and v; gate and up), as one packed
    product: fewer, larger matrices read per step. Calling it returns the layers' outputs side by side on
    the last axis (bit for bit what the separate packed products give: one dot product per output either
    way), or None where the packed path does not apply (the caller then calls the layers one by one): rows,
    dtype, gradients as for PackedLinear, and any of the module's layers no longer a PackedLinear (replaced,
    e.g. by model.quant, or unpacked). Not a module: it holds no parameters and is not in the state_dict;
    it packs again when any layer's weight changes, and a copy of it (deepcopy) packs afresh."""

    def __init__(self, owner: nn.Module, names: tuple[str, ...]):
        self.owner, self.names = owner, names
        self.sizes = [getattr(owner, name).out_features for name in names]
        self._packing = None  # (the weights' stamps, the packed matrix, the bias): replaced whole

    def __getstate__(self):
        return {**self.__dict__, "_packing": None}

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        layers = [getattr(self.owner, name) for name in self.names]
        if not all(type(layer) is PackedLinear for layer in layers):
            return None
        weights = [layer.weight for layer in layers]
        if [w.shape[0] for w in weights] != self.sizes or not _usable(x, weights, layers[0].in_features):
            return None
        stamps = tuple((layer.stamp(), _stamp(layer.bias)) for layer in layers)
        packing = self._packing
        if packing is None or packing[0] != stamps:
            biases = [layer.bias for layer in layers]
            packing = (stamps, torch.ops.mkldnn._reorder_linear_weight(torch.cat([w.detach() for w in weights]),
                                                                       _PACK_HINT),
                       None if biases[0] is None else torch.cat([b.detach() for b in biases]))
            self._packing = packing
        return torch.ops.mkldnn._linear_pointwise(x, packing[1], packing[2], "none", [], "")


def _fusable(layers: list[nn.Module]) -> bool:
    return (all(isinstance(layer, nn.Linear) for layer in layers)
            and len({(layer.in_features, layer.bias is None) for layer in layers}) == 1)


def unpack_linears(model: nn.Module) -> int:
    """Undo pack_linears: plain nn.Linear modules again, the packed copies and fused products dropped.
    Returns how many Linear layers were unpacked."""
    count = 0
    for module in model.modules():
        if type(module) is PackedLinear:
            module.__class__ = nn.Linear
            for name in ("_packing", "_generation", "_fused_member"):
                module.__dict__.pop(name, None)
            count += 1
        if module.__dict__.get("fused") is not None:
            module.__dict__.pop("fused")
    return count


def repack(model: nn.Module) -> None:
    """Drop every packed copy of `model` (each is made again on its next use): after weights were written
    through `.data`, which torch's version counter does not see."""
    for module in model.modules():
        if type(module) is PackedLinear:
            module._packing = None
            module._generation += 1
        if module.__dict__.get("fused") is not None:
            module.fused._packing = None


def pack_linears(model: nn.Module) -> int:
    """Give every plain nn.Linear of `model` (float32, on a CPU) a oneDNN-packed copy of its weight, made
    now. Returns how many were packed: 0 where A3_PACKED_LINEAR=0, where oneDNN is not available, or for a
    model on a GPU or in another dtype. Subclasses of nn.Linear (model.quant's int8 layers, LoRA's) are left
    alone."""
    if not enabled() or not available():
        return 0
    packed = []
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.dtype == torch.float32 and module.weight.device.type == "cpu":
            module.__class__ = PackedLinear
            module._packing = None  # packed on first use, or below
            packed.append(module)
    fused = set()
    for module in model.modules():  # q, k, v and gate, up: one product each (model.modeling reads `fused`)
        names = getattr(module, "FUSABLE", ())
        layers = [getattr(module, name, None) for name in names]
        if layers and all(type(layer) is PackedLinear for layer in layers) and _fusable(layers):
            module.fused = FusedProjections(module, names)
            with torch.no_grad():
                module.fused(torch.zeros(1, layers[0].in_features))  # packs now, not on the first step
            fused.update(id(layer) for layer in layers)
            for layer in layers:
                layer._fused_member = True
    for module in packed:  # the rest now (a fused layer called alone uses F.linear: no second copy)
        if id(module) not in fused:
            module._pack()
    return len(packed)


def packed_count(model: nn.Module) -> int:
    """How many of `model`'s Linear layers run on packed weights."""
    return sum(type(module) is PackedLinear for module in model.modules())
