"""The page's named API endpoints (`gr.api`): `infill` and `order_likelihoods`. Their signatures and
docstrings are the API's schema and descriptions.

Neither takes a model, a file or a URL: the model is the one the app loaded, and the arguments are text,
a method name, a seed and orders as JSON. What they are sent is checked against app.session's size limits
here, before the model call (on ZeroGPU a model call holds a GPU), and a refusal is the page's own message
(gr.Error). Anything else that goes wrong is logged and answered with one plain sentence: never a
traceback, an exception's class or a path."""

from __future__ import annotations

import contextlib
import logging

import gradio as gr

from app.order_lab import check_orders_json
from app.session import InputError, check_seed, check_text
from app.ui.model_calls import ModelCalls

log = logging.getLogger(__name__)

INTERNAL_ERROR = "Something went wrong on the server while answering this request; it has been logged."


@contextlib.contextmanager
def answered(endpoint: str):
    """An endpoint's errors as a caller should read them: the app's own message for bad input, one fixed
    sentence for anything else (logged with its traceback here, never sent)."""
    try:
        yield
    except InputError as err:
        raise gr.Error(str(err)) from None
    except Exception:
        log.exception("%s failed", endpoint)
        raise gr.Error(INTERNAL_ERROR) from None


def infill_endpoint(calls: ModelCalls):
    def infill(text: str, mode: str = "A3 best of N", seed: int = 0) -> tuple[str, str]:
        """Fill the [MASK] / [MASK:N] blanks of `text` with the named method (A3 best of N, the default; A3
        plan, A3 dynamic, official dynamic, diffusion, one-step parallel, AR baseline); returns (filled
        text, trace as JSON; for best of N the kept candidate's trace). It decodes as the page does by default,
        with the no-repeat rule on (no word twice in a row, no 3-word phrase twice within 64 tokens)."""
        with answered("infill"):
            check_text(text)
            return calls.infill(text, mode, check_seed(seed))

    return infill


def order_likelihoods_endpoint(calls: ModelCalls):
    def order_likelihoods(text: str, orders_json: str = "") -> dict:
        """Exact log-likelihood of `text` (tokenized as the page does, start token first) under each order:
        `orders_json` empty = the default set (left_to_right, right_to_left, outside_in, blocks_of_4,
        random_i, random_groups_of_4_i); else a JSON list of those names and/or {"name", "group_ids"}.
        Returns {"orders": [{"name", "group_ids", "logp", "token_logps"}, ...]}; logp is the log p of every
        token after the first (lowest) group, given that group; token_logps is null there."""
        with answered("order_likelihoods"):
            check_text(text)
            return calls.order_likelihoods(text, check_orders_json(orders_json))

    return order_likelihoods
