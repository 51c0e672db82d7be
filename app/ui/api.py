"""The page's named API endpoints (`gr.api`): `infill` and `order_likelihoods`. Their signatures and
docstrings are the API's schema and descriptions."""

from __future__ import annotations

import gradio as gr

from app.session import InputError
from app.ui.model_calls import ModelCalls


def infill_endpoint(calls: ModelCalls):
    def infill(text: str, mode: str = "A3 plan", seed: int = 0) -> tuple[str, str]:
        """Fill the [MASK] / [MASK:N] blanks of `text` with the named method (A3 plan, A3 dynamic,
        official dynamic, diffusion, one-step parallel, AR baseline); returns (filled text, trace as JSON)."""
        try:
            return calls.infill(text, mode, int(seed))
        except InputError as err:
            raise gr.Error(str(err)) from None

    return infill


def order_likelihoods_endpoint(calls: ModelCalls):
    def order_likelihoods(text: str, orders_json: str = "") -> dict:
        """Exact log-likelihood of `text` (tokenized as the page does, start token first) under each order:
        `orders_json` empty = the default set (left_to_right, right_to_left, outside_in, blocks_of_4,
        random_i, random_groups_of_4_i); else a JSON list of those names and/or {"name", "group_ids"}.
        Returns {"orders": [{"name", "group_ids", "logp", "token_logps"}, ...]}; logp is the log p of every
        token after the first (lowest) group, given that group; token_logps is null there."""
        try:
            return calls.order_likelihoods(text, orders_json or "")
        except InputError as err:
            raise gr.Error(str(err)) from None

    return order_likelihoods
