"""The model calls the page makes, each wrapped once by `gpu` (spaces.GPU on ZeroGPU, the identity
elsewhere). On ZeroGPU a wrapped call runs in a forked worker and its arguments and result are pickled,
so the explorer (the model) stays in the closure and only plain values cross; the preview returns what
it computed instead of relying on changes made in place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app import branching as branch_logic
from app import order_lab as lab_logic
from app.session import Explorer


@dataclass(frozen=True)
class ModelCalls:
    explorer: Explorer
    decode: Callable  # (Request) -> Result
    compare: Callable  # (Request) -> Comparison
    order_lab: Callable  # (text, n_random, group size, seed, custom group ids) -> LabResult
    load_order: Callable  # (LabResult, order name) -> Result, teacher-forced
    load_scheme: Callable  # (text, scheme name, group size, seed) -> Result, teacher-forced
    preview: Callable  # (Result, step) -> (candidates, entropy, confidence, vocab) of the step
    attention: Callable  # (Result, step, stream) -> attention weights of the step
    branch: Callable  # (tree, Result, step, held=, lab=, **change) -> (tree, shown Result, memory note)
    infill: Callable  # (text, method, seed) -> (filled text, trace JSON)
    order_likelihoods: Callable  # (text, orders JSON) -> {"orders": [...]}


def model_calls(explorer: Explorer, gpu: Callable | None = None) -> ModelCalls:
    gpu = gpu or (lambda fn: fn)

    def decode(request):
        return explorer.decode(request)

    def compare(request):
        return explorer.compare(request)

    def order_lab(text, n_random, size, seed, custom):
        return lab_logic.compute(explorer, text, n_random=int(n_random if n_random is not None else 14),
                                 group_size=int(size or 4), seed=int(seed or 0), custom_groups=custom or "")

    def load_order(lab, name):
        return lab_logic.load_order(explorer, lab, name)

    def load_scheme(text, name, size, seed):
        return lab_logic.load_scheme(explorer, text, name, group_size=int(size or 4), seed=int(seed or 0))[0]

    def preview(result, step):
        explorer.preview(result, step)
        record = result.trace.steps[step]
        return record.candidates, record.entropy, record.confidence, result.vocab

    def attention(result, step, stream):
        return explorer.attention(result, step, stream)

    def branch(tree, result, step, **change):
        return branch_logic.branch(explorer, tree, result, step, **change)

    def order_likelihoods(text, orders_json):
        return lab_logic.api(explorer, text, orders_json)

    return ModelCalls(explorer, decode=gpu(decode), compare=gpu(compare), order_lab=gpu(order_lab),
                      load_order=gpu(load_order), load_scheme=gpu(load_scheme), preview=gpu(preview),
                      attention=gpu(attention), branch=gpu(branch), infill=gpu(explorer.infill),
                      order_likelihoods=gpu(order_likelihoods))
