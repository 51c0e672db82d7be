"""The attention probabilities an A3 model actually used, read out of one forward pass.

The app draws the masks (who *may* attend); this module gives the weights (how much each row *did*
attend). `capture_attention` opens a tap on every attention layer (`A3Attention.observer`, None in
normal use, so decoding and training pay nothing), and each layer hands over the exact post-RoPE
q and k and the boolean mask it is about to attend with. The probabilities are recomputed from those
with the same math as `model.modeling.attend`: GQA repeats each key head for its query heads, scores
are scaled by 1/sqrt(head_dim), blocked keys are -inf before the softmax and exact zeros after it.

A row that sees nothing (the query rows of the lowest group) gets all zeros, not a distribution:
the model gives such rows a zero attention output, so zero weights are what it really used.

`attention_weights(model, token_ids, group_ids)` runs one uncached forward of a whole sequence and
returns (layers, heads, L, L) for one stream; `step_inputs` / `step_attention` replay the forward
behind one step of a `DecodeTrace` and name the rows that step decided.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from model.decoding import DecodeTrace
from model.masks import as_group_ids, two_stream_masks
from model.network import A3Attention

STREAMS = ("query", "content")
AXES = ("layers", "heads")
BLOCKED_NOTE = "blocked cells are exactly 0"


# --------------------------------------------------------------------------------------------------
# the math: probabilities from the q, k and mask a layer attends with


def attention_probabilities(q: torch.Tensor, k: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Softmax attention weights, float32, exactly 0 on blocked keys and on rows that see nothing.

    q (B, Hq, R, D), k (B, Hkv, K, D), visible (B, R, K) bool -> (B, Hq, R, K). Float32 whatever the
    model's dtype, so rows sum to 1 within float32 rounding even for a bfloat16 model.
    """
    q, k = q.float(), k.float()
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # (B, Hq, K, D): query head h reads kv head h // g
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, Hq, R, K)
    allowed = visible.unsqueeze(1)  # (B, 1, R, K)
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)  # a row that sees nothing is NaN here
    return torch.where(allowed, probs, torch.zeros((), dtype=probs.dtype, device=probs.device))


# --------------------------------------------------------------------------------------------------
# the tap


def attention_layers(model: nn.Module) -> list[A3Attention]:
    """The attention modules of an A3 model (or A3Model, or a wrapped one), in layer order."""
    layers = [m for m in model.modules() if isinstance(m, A3Attention)]
    if not layers:
        raise TypeError(f"{type(model).__name__} has no A3Attention layers; attention capture needs an A3 model.")
    return layers


_CAPTURE_LOCK = threading.Lock()  # one capture at a time in the process; others wait for it
_capturing: set[int] = set()  # the thread holding it (to refuse nesting rather than deadlock)


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[list[list[torch.Tensor]]]:
    """While open, every forward of `model` from this thread records its attention probabilities.

    Yields one list per layer; each forward appends one (B, Hq, R, K) float32 tensor to each. Calls
    from other threads (another request sharing the model) are not recorded. A capture opened by another
    thread meanwhile waits until this one closes (two users drawing attention at once both get theirs);
    one nested in the same thread is refused. The taps are removed on exit, even after an error.
    """
    layers = attention_layers(model)
    owner = threading.get_ident()
    if owner in _capturing:
        raise RuntimeError("attention is already being captured in this thread; captures do not nest.")
    captured: list[list[torch.Tensor]] = [[] for _ in layers]

    def observer_for(store: list[torch.Tensor]):
        def observe(q: torch.Tensor, k: torch.Tensor, visible: torch.Tensor) -> None:
            if threading.get_ident() == owner:
                store.append(attention_probabilities(q, k, visible))
        return observe

    with _CAPTURE_LOCK:
        _capturing.add(owner)
        try:
            for layer, store in zip(layers, captured, strict=True):
                layer.observer = observer_for(store)
            yield captured
        finally:
            for layer in layers:
                layer.observer = None
            _capturing.discard(owner)


# --------------------------------------------------------------------------------------------------
# one sequence, one stream


@dataclass(frozen=True)
class AttentionWeights:
    """Per-layer, per-head attention of one stream over one sequence (batch of one).

    probs[l, h, i, j] is how much row i (position i of `stream`) attended to the content of position j
    in layer l, head h. Rows sum to 1 over `allowed[i]`; blocked cells are exactly 0; a row with no
    allowed cell is all 0. `rows` are the positions worth drawing (all of them unless a step chose).
    """

    stream: str
    probs: np.ndarray  # (layers, heads, L, L) float32
    allowed: np.ndarray  # (L, L) bool: the stream's mask from model.masks.two_stream_masks
    token_ids: np.ndarray  # (L,) int64: the tokens of the forward
    group_ids: np.ndarray  # (L,) int64
    rows: tuple[int, ...]

    def select(self, layer: int | None = None, head: int | None = None) -> np.ndarray:
        """(L, L): one layer / head, or the mean over all of them where None (see `select_weights`)."""
        return select_weights(self.probs, layer=layer, head=head)

    def mean(self, over: Sequence[str] = AXES) -> np.ndarray:
        """The probabilities averaged over the named axes ("layers", "heads"), which are dropped."""
        unknown = set(over) - set(AXES)
        if unknown:
            raise ValueError(f"can average over {AXES} only; got {sorted(unknown)}.")
        axes = tuple(AXES.index(name) for name in over)
        return self.probs.mean(axis=axes, dtype=np.float64).astype(np.float32) if axes else self.probs


def select_weights(probs: np.ndarray, *, layer: int | None = None, head: int | None = None) -> np.ndarray:
    """(layers, heads, L, L) -> (L, L): index a layer and a head, or average where None.

    A mean of distributions over the same allowed cells is again one, and exact zeros stay exact
    zeros, so the blocked cells of an average are still exactly 0.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4:
        raise ValueError(f"probs must be (layers, heads, L, L); got shape {probs.shape}.")
    for name, index, size in (("layer", layer, probs.shape[0]), ("head", head, probs.shape[1])):
        if index is not None and not 0 <= index < size:
            raise ValueError(f"{name} must lie in [0, {size - 1}] or be None (the mean); got {index}.")
    chosen = probs[layer] if layer is not None else probs.mean(axis=0, dtype=np.float64)  # (heads, L, L)
    chosen = chosen[head] if head is not None else chosen.mean(axis=0, dtype=np.float64)  # (L, L)
    return chosen.astype(np.float32)


def _check_stream(stream: str) -> str:
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}; got {stream!r}.")
    return stream


@torch.no_grad()
def attention_weights(model: nn.Module, token_ids, group_ids, *, stream: str = "query",
                      rows: Sequence[int] | None = None) -> AttentionWeights:
    """Run one full, uncached forward of `token_ids` [L] grouped by `group_ids` [L] and return what
    every layer and head of `stream` attended to. The model's outputs are untouched (the tap only reads).

    `model` is an A3ForAnyOrderLM (or a wrapper with its forward); it runs on its own device and dtype,
    the weights come back on the CPU.
    """
    _check_stream(stream)
    device = next(model.parameters()).device
    ids = torch.as_tensor(token_ids, dtype=torch.long).cpu().view(1, -1)  # (1, L)
    groups = as_group_ids(group_ids).cpu().view(1, -1)  # (1, L)
    if groups.shape != ids.shape:
        raise ValueError(f"group_ids must give one group per token: {ids.shape[1]} tokens, {groups.shape[1]} groups.")
    length = ids.shape[1]
    with capture_attention(model) as captured:
        model(ids.to(device), group_ids=groups.to(device))
    # one call per layer; its rows are [content rows; query rows], each L long, keys the L content rows
    part = slice(0, length) if stream == "content" else slice(length, 2 * length)
    probs = torch.stack([calls[0][0, :, part] for calls in captured])  # (layers, heads, L, L)
    content, query = two_stream_masks(groups[0])
    allowed = content if stream == "content" else query
    return AttentionWeights(stream=stream, probs=probs.cpu().numpy(), allowed=allowed.numpy(),
                            token_ids=ids[0].numpy(), group_ids=groups[0].numpy(),
                            rows=tuple(range(length)) if rows is None else tuple(int(r) for r in rows))


# --------------------------------------------------------------------------------------------------
# the forward behind one step of a trace


@dataclass(frozen=True)
class StepInputs:
    """What to run to see the attention behind step `step` of a trace, and which rows to draw."""

    step: int
    token_ids: list[int]  # tokens committed up to and including this step; placeholders where still open
    group_ids: list[int]  # the grouping the model used at this step
    rows: list[int]  # the rows that made this step's prediction
    stream: str  # the stream those rows belong to


def step_inputs(trace: DecodeTrace, step: int) -> StepInputs:
    """The tokens, grouping, rows and stream of the model call behind step `step` (0-based).

    Rows are the positions the step committed, in the query stream: their rows see only groups below
    theirs, all decided before this step, so the placeholders at still-open positions (and the tokens
    committed by this very step) are invisible to them; the tests check it. Content rows of these
    positions, if asked for, read the committed tokens, as later steps do.
    The AR baseline predicts position p from the content row of p - 1 under left-to-right groups, so
    for it the row is p - 1 in the content stream (pass the base model to `step_attention`).
    """
    if not 0 <= step < len(trace.steps):
        raise ValueError(f"step must lie in [0, {len(trace.steps) - 1}]: there is no model call before step 0.")
    tokens = trace.sequence_at(step)
    record = trace.steps[step]
    if trace.mode == "ar_baseline":
        return StepInputs(step, tokens, list(range(len(tokens))), [p - 1 for p in record.positions], "content")
    return StepInputs(step, tokens, list(trace.group_ids_at(step)), list(record.positions), "query")


def step_attention(model: nn.Module, trace: DecodeTrace, step: int, *, stream: str | None = None) -> AttentionWeights:
    """`attention_weights` for the model call behind one step; `rows` are that step's rows.

    stream None is the stream that made the step's prediction; "content" with a query-stream step shows
    the content rows of the committed positions (what later steps read from them).
    """
    inputs = step_inputs(trace, step)
    chosen = inputs.stream if stream is None else _check_stream(stream)
    rows = inputs.rows
    if chosen != inputs.stream:  # another stream of the same positions, not of the rows that predicted
        rows = list(trace.steps[step].positions)
    return attention_weights(model, inputs.token_ids, inputs.group_ids, stream=chosen, rows=rows)
