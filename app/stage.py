"""The stage's data: everything the browser needs to draw every step of one trace, sent once.

`stage_payload(result)` is the run's trace view (`app.trace_view.view_of_result`: labels, colours, the
grid's shape, the DAG, summaries, the mask checker's verdicts) plus what only the live stage needs (an
id, playback settings, the headline, the note). The browser (app/static/stage_core.js + stage.js) then
draws the text, the order grid, the DAG and both masks for any step without a server round trip, so
playback keeps the speed asked and scrubbing is instant.

The GIF and the offline player (app.slides) draw from the same view; tests/test_figures_stage.py runs
stage_core.js in Chromium and compares it with the Plotly reference in app.figures step by step.
Nothing here imports gradio.
"""

from __future__ import annotations

import itertools
import math

from app.narration import rule_status
from app.session import BEST_OF_N, Result
from app.trace_view import is_teacher_forced, view_of_result

_ids = itertools.count(1)


def calls_summary(result: Result) -> str:
    """How many model calls this run took, counted against AR and fixed groups of 4, and whether the
    no-repeat rule ("No stutter") was on."""
    trace = result.trace
    n_open = len(trace.plan.open_positions)
    tokens = "token" if n_open == 1 else "tokens"
    calls = "call" if result.model_calls == 1 else "calls"
    found = result.best_of_n
    kept = ""
    if found is not None:
        shown = (trace.settings or {}).get("candidate", found.best.name)
        decodes = found.decode_calls  # the lockstep decodes share their calls
        plural = lambda n: "call" if n == 1 else "calls"  # noqa: E731
        together = (f"{len(found.candidates)} decodes in {decodes} {plural(decodes)}, scored in "
                    f"{found.scoring_calls} {plural(found.scoring_calls)}")
        kept = (f" ({together}; on the stage: “{shown}”, the one kept)") if shown == found.best.name else \
            (f" ({together}; on the stage: “{shown}”, not the one kept, “{found.best.name}”)")
    if is_teacher_forced(trace):  # Order lab's scoring, stepped through: nothing chosen, no rule to speak of
        return (f"{result.name}: {result.model_calls} model {calls} for {n_open} {tokens}, one per group to show each "
                "step (the likelihood itself is one forward pass)")
    # the page's "No stutter" switch (model.repeats)
    rule = rule_status(trace)
    config = trace.config
    spec = config.spec if config is not None else None
    # the yardsticks: fixed groups of 4 (any A3 order could take them) and AR's one call a token; neither
    # is news for the AR baseline itself, and one-step parallel's single call needs no groups to compare with
    groups = "" if spec is not None and (spec.needs_base or config.method == "one_step_parallel") else \
        f" · groups of 4 would take {math.ceil(n_open / 4)}"
    ar = "" if spec is not None and spec.needs_base else f" · AR needs {n_open}"
    if result.flexible is not None:  # a [MASK:?] search: the yardsticks are of the one fill on the stage
        how = " by best of N" if result.method == BEST_OF_N else ""
        own = "call" if trace.model_calls == 1 else "calls"
        return (f"{result.name}: {result.model_calls} model {calls} in all, {len(result.flexible.candidates)} lengths "
                f"of the blank decoded{how} and scored · the fill on the stage ({n_open} {tokens}) took "
                f"{trace.model_calls} model {own}{groups}{ar}{rule}")
    return f"{result.name}: {result.model_calls} model {calls} for {n_open} {tokens}{kept}{groups}{ar}{rule}"


def stage_payload(result: Result | None, *, autoplay: bool = True, loop: bool = False, speed: float | None = None,
                  note: str = "", start: int = -1, headline: str | None = None,
                  terms: dict[str, str] | None = None) -> dict:
    """The dict the stage component draws. `result=None` gives the empty stage (with what to do).

    `speed` (seconds per step) is only sent when asked for: without it the stage keeps the speed the
    user set, across runs and loaded runs. `start` is the step the stage opens on (-1: before the first);
    a stage opened on a step stays paused there (a branch lands where it was branched, app.ui.details_tab).
    `headline` replaces the calls summary (a branch says which it is); `terms` add to the words that
    hover with their meaning."""
    if result is None:
        return {"id": next(_ids), "empty": True,
                "note": note or "Nothing to show yet: type a text with [MASK] blanks under “✎ Your text”, "
                                "then press Run."}
    if not note and result.flexible is not None:
        shown = next((c for c in result.flexible.candidates if c.trace is result.trace), None)
        other = f"On the stage: the {shown.length}-token fill. " if shown is not None and \
            shown is not result.flexible.best else ""  # a length picked under Your text, not the one kept
        note = other + result.flexible.summary() + " Every length with its fill: under ✎ Your text."
    view = view_of_result(result).to_dict()
    start = max(-1, min(int(start), result.n_steps - 1))
    landing = {"start": start} if start >= 0 else {}  # before the first step: the key stays out
    return {
        **view,
        **landing,
        "terms": {**(view.get("terms") or {}), **(terms or {})},
        "id": next(_ids),
        "empty": False,
        "model": result.model,
        "text": result.text,
        "headline": headline or calls_summary(result),
        "autoplay": bool(autoplay and result.n_steps > 0 and start < 0),
        "loop": bool(loop),
        "speed": None if speed is None else float(speed),
        "note": note,
    }
