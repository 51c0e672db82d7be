"""⤓ Export: the trace on the stage (JSON, and through app.slides an animated GIF and an offline HTML
player) and the step the stage stopped on (its masks as CSV or NPY, its figures as HTML)."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

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


@dataclass(frozen=True)
class ExportTab:
    gif: gr.DownloadButton  # hidden without app.slides
    player: gr.DownloadButton  # hidden without app.slides
    trace: gr.DownloadButton
    csv: gr.DownloadButton
    npy: gr.DownloadButton
    html: gr.DownloadButton


def build_export_tab(has_slides: bool) -> ExportTab:
    with gr.Tab("⤓ Export", id="export", elem_id="tab-export"):
        gr.Markdown("The trace on the stage, and the step the stage stopped on. Each Plotly figure under "
                    "**⌕ Step details** also has a camera button that saves it as PNG.")
        with gr.Row():
            gif = gr.DownloadButton("Animated GIF", elem_id="export-gif", visible=has_slides)
            player = gr.DownloadButton("HTML player", elem_id="export-player", visible=has_slides)
            trace = gr.DownloadButton("Trace (JSON)", elem_id="export-trace")
        with gr.Row():
            csv = gr.DownloadButton("Masks at this step (CSV, zip)", elem_id="export-csv")
            npy = gr.DownloadButton("Masks at this step (NPY, npz)", elem_id="export-npz")
            html = gr.DownloadButton("Figures at this step (HTML)", elem_id="export-html")
    return ExportTab(gif, player, trace, csv, npy, html)


def export(result: Result | None, name: str, make) -> str | None:
    """The path of a new file `name` holding `make(result)` (bytes or text)."""
    if result is None:
        gr.Warning("Run a decoding first; there is nothing to export yet.")
        return None
    data = make(result)
    path = Path(tempfile.mkdtemp(prefix="a3-export-")) / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def export_file(result: Result | None, name: str, explorer: Explorer, write) -> str | None:
    """An export that writes its own file: `write(trace_dict, path)` (app.slides)."""
    if result is None:
        gr.Warning("Run a decoding first; there is nothing to export yet.")
        return None
    data = result.trace.to_dict(explorer.loaded.tokenizer)
    data["method"], data["model"] = result.method, result.model
    path = Path(tempfile.mkdtemp(prefix="a3-export-")) / name
    try:
        return str(write(data, path) or path)
    except Exception as err:  # never a stack trace in the page
        log.exception("export failed")
        gr.Warning(f"Export failed: {err}")
        return None


def figures_html(result: Result, step, reduce, sort) -> str:
    rendered = render_step(result, step, reduce=reduce, sort_by_group=sort)
    parts = [f"<h2>A3 Explorer · {result.method} · step {clamp_step(result, step)}</h2><p>{rendered.summary}</p>"]
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
        return export(result, f"masks_step{step}.zip", lambda r: self.explorer.masks_csv(r, int(step)))

    def masks_npz(self, result, step):
        return export(result, f"masks_step{step}.npz", lambda r: self.explorer.masks_npz(r, int(step)))

    def step_figures(self, result, step, reduce, sort):
        return export(result, f"figures_step{step}.html", lambda r: figures_html(r, step, reduce, sort))

    def gif(self, result):
        return export_file(result, "a3-playback.gif", self.explorer, self.slides.export_gif)

    def player(self, result):
        return export_file(result, "a3-player.html", self.explorer, self.slides.export_player)
