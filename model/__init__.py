"""The A3 library: any-order, any-subset autoregressive modelling (arXiv 2601.13228) in PyTorch.

What it offers (each name importable from `model` itself, loaded on first use):

    masks       two_stream_masks, check_masks, group_order, group_visibility   the two-stream rule
    network     A3Net, A3NetConfig, A3Cache, a3_loss                   the model in plain PyTorch, one file
    modeling    A3Config, A3ForAnyOrderLM                            the same as transformers classes
    plans       Plan, make_plan, custom_plan, parse_group_ids, ORDERS, PlanError  group ids per position
    config      DecodeConfig, Sampler, METHODS, method_spec                       how to decode, as data
    decoding    decode, collect, DecodeStep, DecodeTrace, sequence_log_likelihood  the one entry, the trace
    repeats     RepeatGuard                                          the no-repeat rule (Sampler.no_repeat)
    layout      Layout                                               a typed text's layout: a space before a blank
    branching   BranchTree                                           decode again from any step
    attention   capture_attention, step_attention                    the attention weights really used
    flexible    flexible_infill, find_flexible                       [MASK:?]: a blank of any length
    orders      order_likelihoods                                    exact log p of one text under many orders
    gallery     SCHEMES                                              common attention schemes as group ids
    text        encode_masked_text, decode_text, token_strings       the [MASK] / [MASK:N] syntax
    loading     load_model, LoadedModel, ModelLoadError              checkpoints, the embedded default
    precision   auto_dtype                                           the default dtype per device

The tools that use the library live beside it: `model.data` (the corpora), `model.train` (adaptation,
`python -m model.train`), `model.eval` (the evaluation, `python -m model.eval`; the probe; the
self-check, `python -m model.selfcheck`). Nothing in the library imports them, and nothing here
imports a UI.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "masks": ("two_stream_masks", "check_masks", "group_order", "group_visibility"),
    "network": ("A3Net", "A3NetConfig", "A3Cache", "a3_loss"),
    "modeling": ("A3Config", "A3ForAnyOrderLM"),
    "plans": ("Plan", "make_plan", "custom_plan", "parse_group_ids", "ORDERS", "PlanError"),
    "config": ("DecodeConfig", "Sampler", "METHODS", "method_spec"),
    "decoding": ("decode", "collect", "DecodeStep", "DecodeTrace", "sequence_log_likelihood"),
    "repeats": ("RepeatGuard",),
    "layout": ("Layout",),
    "branching": ("BranchTree",),
    "attention": ("capture_attention", "step_attention"),
    "flexible": ("flexible_infill", "find_flexible"),
    "orders": ("order_likelihoods",),
    "gallery": ("SCHEMES",),
    "text": ("encode_masked_text", "decode_text", "token_strings"),
    "loading": ("load_model", "LoadedModel", "ModelLoadError"),
    "precision": ("auto_dtype",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """`from model import load_model` imports model.loading only then (torch stays unloaded until needed)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(f"model.{_WHERE[name]}"), name)
