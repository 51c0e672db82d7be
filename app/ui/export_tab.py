"""⤓ Export: the trace on the stage (JSON, and through app.slides an animated GIF and an offline HTML
player) and the step on the stage (its masks as CSV or NPY, its figures as HTML). One press, one
download, of the step on screen at the press."""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass
from html import escape
from pathlib import Path

import gradio as gr

from app import downloads, memory
from app.render import clamp_step, render_step
from app.session import Explorer, Result

log = logging.getLogger(__name__)


def slides_module():
    """app.slides (the GIF and HTML-player exports) when it is there; None otherwise."""
    try:
        from app import slides
    except ImportError:
        return None
    return slides if hasattr(slides, "export_gif") and hasattr(slides, "export_player") else None


# The step on screen when the button is pressed: the stage holds the step in the browser and the server
# hears of it only once the stage settles, so the export reads it off the stage's counter.
STEP_ON_SCREEN = ("(...inputs) => { const counter = document.querySelector('#stage-counter'); "
                  "if (counter && counter.dataset.step !== undefined) inputs[1] = Number(counter.dataset.step); "
                  "return inputs; }")
# Opening the tab names that step in its first line, two frames later: by then the stage, hidden behind the
# tab, has stopped playing (stage.js) and its counter holds the step the exports will read
NAME_THE_STEP = ("() => { const name = () => { const counter = document.querySelector('#stage-counter'); "
                 "const line = document.querySelector('#export-on-stage'); if (!line) return; "
                 "const step = counter && counter.dataset.step !== undefined ? Number(counter.dataset.step) : NaN; "
                 "const total = window.__a3stage && window.__a3stage.state.P && window.__a3stage.state.P.steps "
                 "? window.__a3stage.state.P.steps.length : 0; "
                 "line.textContent = !total || Number.isNaN(step) ? 'Nothing on the stage yet.' : 'On the stage: ' + "
                 "(step < 0 ? 'before decoding (step 0/' + total + ')' : 'step ' + (step + 1) + '/' + total) + "
                 "'. The step exports below are of that step.'; }; "
                 "requestAnimationFrame(() => requestAnimationFrame(name)); }")


@dataclass(frozen=True)
class Export:
    """One export: the button the visitor presses, and a hidden download button that gets the file
    made and is then clicked by script, so that one press downloads the file just made. (A visible
    gr.DownloadButton downloads the value it already holds, then runs its event: the file of the
    previous press.)"""

    button: gr.Button
    file: gr.DownloadButton

    @classmethod
    def create(cls, label: str, elem_id: str, visible: bool = True) -> Export:
        button = gr.Button(label, elem_id=elem_id, visible=visible)
        return cls(button, gr.DownloadButton(label, elem_id=f"{elem_id}-file", visible="hidden"))

    def wire(self, fn, inputs: list, *, js: str | None = None) -> None:
        self.button.click(fn, inputs, self.file, js=js, api_visibility="private").success(
            None, None, None, js=f"() => {{ document.querySelector('#{self.file.elem_id}').click(); }}",
            api_visibility="private", queue=False)


@dataclass(frozen=True)
class ExportTab:
    tab: gr.Tab
    gif: Export  # hidden without app.slides
    player: Export  # hidden without app.slides
    trace: Export
    csv: Export
    npy: Export
    html: Export
    step: gr.Number  # hidden: the step on screen, filled in by STEP_ON_SCREEN at each press


def build_export_tab(has_slides: bool) -> ExportTab:
    with gr.Tab("⤓ Export", id="export", elem_id="tab-export") as tab:
        gr.Markdown("Files of the run on the stage, each one click: the GIF, the player and the trace hold every "
                    "step; the masks and figures, the step the stage shows (named below). Each Plotly figure under "
                    "**⌕ Step details** also has a camera button that saves it as PNG.")
        gr.HTML("", elem_id="export-on-stage", elem_classes=["a3-export-step"])
        with gr.Row():
            gif = Export.create("Animated GIF", "export-gif", visible=has_slides)
            player = Export.create("HTML player", "export-player", visible=has_slides)
            trace = Export.create("Trace (JSON)", "export-trace")
        with gr.Row():
            csv = Export.create("Masks at this step (CSV, zip)", "export-csv")
            npy = Export.create("Masks at this step (NPY, npz)", "export-npz")
            html = Export.create("Figures at this step (HTML)", "export-html")
        step = gr.Number(-1, precision=0, visible="hidden", elem_id="export-step")
    return ExportTab(tab, gif, player, trace, csv, npy, html, step)


def download_stem(result: Result) -> str:
    """What every file of one trace is named after: 'a3-' + the text's first 4 words (their ASCII letters
    and digits, accents dropped: "Café" reads "cafe"; 'text' where none is left) + 6 hex digits of the
    trace (method, plan and tokens), so that the downloads of two runs never come out as 'trace.json' and
    'trace (1).json'."""
    words = [re.sub(r"[^a-z0-9]", "", unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode())
             for word in result.shown_text.lower().split()[:4]]  # "Café" -> "cafe"
    words = [word for word in words if word] or ["text"]
    trace = result.trace
    key = repr((result.method, trace.plan.group_ids, trace.final_ids, trace.mode)).encode()
    return "-".join(["a3", *words, hashlib.sha1(key).hexdigest()[:6]])


def new_file(result: Result, name: str) -> Path:
    """Where an export of `result` is written: '<download_stem>-<name>' in a fresh directory of
    app.downloads (which deletes the exports older than a few minutes first)."""
    return downloads.new_path(f"{download_stem(result)}-{name}")


def shown_step(result: Result | None, step) -> int:
    """The step as the stage counts it: 0 before decoding, then 1, 2, ... (a file is named by it)."""
    return clamp_step(result, step) + 1 if result is not None else 0


def export(result: Result | None, name: str, make) -> str | None:
    """The path of a new file '<download_stem>-<name>' holding `make(result)` (bytes or text)."""
    if result is None:
        gr.Warning(f"Nothing to export: {memory.not_held()}")
        return None
    data = make(result)
    path = new_file(result, name)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def export_file(result: Result | None, name: str, explorer: Explorer, write) -> str | None:
    """An export that writes its own file: `write(trace_dict, path)` (app.slides)."""
    if result is None:
        gr.Warning(f"Nothing to export: {memory.not_held()}")
        return None
    data = explorer.export_dict(result)
    path = new_file(result, name)
    try:
        return str(write(data, path) or path)
    except Exception as err:  # never a stack trace in the page
        log.exception("export failed")
        gr.Warning(f"Export failed: {err}")
        return None


def figures_html(result: Result, step, reduce, sort) -> str:
    rendered = render_step(result, step, reduce=reduce, sort_by_group=sort)
    parts = [f"<h2>A3 Explorer · {escape(result.method)}</h2><p>{escape(rendered.summary)}</p>"]
    for i, fig in enumerate((rendered.grid, rendered.dag, rendered.masks, rendered.logprob)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    return "<html><head><meta charset='utf-8'></head><body>" + "".join(parts) + "</body></html>"


class ExportCallbacks:
    """One callback per download button; each returns the path of the file made, or None."""

    def __init__(self, explorer: Explorer, slides=None):
        self.explorer, self.slides = explorer, slides

    def trace_json(self, result):
        return export(result, "trace.json", self.explorer.trace_json)

    def masks_csv(self, result, step):
        shown = shown_step(result, step)
        return export(result, f"masks-step{shown}.zip", lambda r: self.explorer.masks_csv(r, shown - 1))

    def masks_npz(self, result, step):
        shown = shown_step(result, step)
        return export(result, f"masks-step{shown}.npz", lambda r: self.explorer.masks_npz(r, shown - 1))

    def step_figures(self, result, step, reduce, sort):
        shown = shown_step(result, step)
        return export(result, f"figures-step{shown}.html", lambda r: figures_html(r, shown - 1, reduce, sort))

    def gif(self, result):
        return export_file(result, "playback.gif", self.explorer, self.slides.export_gif)

    def player(self, result, step):
        """The player of the whole run, opening on the step on the stage (a player that opened before decoding
        left a visitor to find the step again)."""
        start = shown_step(result, step) - 1
        return export_file(result, "player.html", self.explorer,
                           lambda data, path: self.slides.export_player(data, path, start))
