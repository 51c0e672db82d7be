"""What every tab reads or writes: the per-session states, the warning line, and putting a result on
the stage."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.session import Result
from app.stage import stage_payload


@dataclass(frozen=True)
class States:
    """Per-session values (gr.State: kept on the server, never sent to the browser)."""

    result: gr.State  # the Result on the stage
    lab: gr.State  # the order lab's last app.order_lab.LabResult
    compared: gr.State  # {method: Result} of the last comparison
    details_step: gr.State  # the step the details tab shows (-1: none yet)
    tree: gr.State  # model.branching.BranchTree of the runs grown from the stage's result
    attention_at: gr.State  # (result, step) the attention plot was drawn for; None when it shows none
    chips_for: gr.State  # the text the server last sent chips for with the text itself (see TextCallbacks.on_typed)
    ran_chips: gr.State  # the chips of the text the last Run read, its masks as decoded (see TextCallbacks.on_ran)

    @classmethod
    def create(cls, result: Result | None) -> States:
        return cls(result=gr.State(result), lab=gr.State(None), compared=gr.State({}), details_step=gr.State(-1),
                   tree=gr.State(None), attention_at=gr.State(None),
                   chips_for=gr.State(None), ran_chips=gr.State(None))


# what a visitor reads when a callback fails unexpectedly (the details go to the log, never to the page)
SERVER_ERROR = "Something went wrong on the server; the previous result stays. Try again, or another input."


WARNING_TOAST_S = 6  # a toast covers the stage's top right (speed, narrate, Present): the warning line keeps the text


WARNING_MARK = "⚠️"  # how a warning starts in the warning line


def warn(message) -> str:
    """A toast now (for WARNING_TOAST_S seconds), and the text of the warning line."""
    gr.Warning(str(message), duration=WARNING_TOAST_S)
    return f"{WARNING_MARK} {message}"


INFO_MARK = "ℹ️"  # how a note (not a warning) starts in the warning line (bench.load counts it as no error)


def inform(message: str) -> str:
    """A note (not a warning) as a toast now, and the text of the warning line ("" for none)."""
    if not message:
        return ""
    gr.Info(message)
    return f"{INFO_MARK} {message}"


def to_stage(result: Result) -> tuple:
    """(result, stage, tabs, warning): `result` on the stage, the stage tab open, no warning."""
    return result, stage_payload(result), gr.Tabs(selected="stage"), ""
