"""The Gradio page. `build_demo(explorer)` puts the tabs of app.ui together in page order and wires
them (app.ui.wiring); every callback is a thin adapter over `app.session.Explorer` (the model),
`app.stage.stage_payload` (what the stage draws) or `app.render.render_step` (the reference Plotly
figures of the detail tab).

The page opens on the stage (app.stage_component.Stage), already playing an example decoded ahead of
time (app.demo_trace). The stage holds the step in the browser: stepping, scrubbing and playback never
call the server, so playback keeps the speed asked. When the step settles the stage reports it
(`step_settled`), and the detail tab (candidates, log p, Plotly figures with hover) follows.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from app.session import Explorer, Result
from app.ui.compare_tab import build_compare_tab
from app.ui.details_tab import build_details_tab
from app.ui.export_tab import build_export_tab, slides_module
from app.ui.how_tab import HOW_A3_WORKS, build_how_tab
from app.ui.lab_tab import build_lab_tab
from app.ui.model_calls import model_calls
from app.ui.shared import States
from app.ui.stage_tab import build_stage_tab
from app.ui.text_tab import EXAMPLES, build_text_tab
from app.ui.wiring import Page, wire_events

__all__ = ["EXAMPLES", "HOW_A3_WORKS", "build_demo", "header_markdown", "launch_kwargs", "slides_module"]

STATIC = Path(__file__).resolve().parent / "static"

# Keyboard: ← / → step, space plays or pauses, Home / End, P presentation (ignored while typing in a field).
SHORTCUTS = """
<script>
document.addEventListener('keydown', (e) => {
  const t = e.target, tag = (t && t.tagName || '').toLowerCase();
  const typing = tag === 'textarea' || (t && t.isContentEditable) ||
    (tag === 'input' && !['range', 'checkbox', 'radio', 'button'].includes((t.type || '').toLowerCase()));
  if (typing || e.altKey || e.ctrlKey || e.metaKey) return;
  const click = (id) => { const b = document.querySelector('#' + id); if (b) { b.click(); e.preventDefault(); } };
  const keys = {ArrowRight: 'next-btn', ArrowLeft: 'prev-btn', ' ': 'play-btn', Home: 'first-btn', End: 'last-btn',
                p: 'present-btn', P: 'present-btn'};
  const id = keys[e.key] || (e.code === 'Space' ? 'play-btn' : null);
  if (!id) return;
  // a focused button or slider would also act on the key: take the focus away so only the shortcut acts
  if (tag === 'button' || tag === 'input') t.blur();
  click(id);
});
</script>
"""


def launch_kwargs() -> dict:
    """App-level settings that Gradio 6 takes in launch() (tests launch with the same ones)."""
    return {"theme": gr.themes.Soft(), "css": (STATIC / "app.css").read_text(), "head": SHORTCUTS,
            "footer_links": ["gradio", "api", "settings"], "show_error": False}


def build_demo(explorer: Explorer, *, device_note: str = "", gpu=None, demo: tuple[Result | None, str] | None = None,
               ) -> gr.Blocks:
    """The page for one explorer. `gpu` wraps the model calls (spaces.GPU on ZeroGPU); `demo` is the
    example the stage opens with (app.demo_trace.load_demo), decoded before any page loads."""
    calls = model_calls(explorer, gpu)
    demo_result, demo_note = demo if demo is not None else (None, "")
    slides = slides_module()
    with gr.Blocks(title="A3 Explorer") as blocks:
        states = States.create(demo_result)
        gr.Markdown(header_markdown(explorer, device_note), elem_id="header")
        warning = gr.Markdown("", elem_id="warning")
        with gr.Tabs(selected="stage", elem_id="tabs") as tabs:
            stage = build_stage_tab(demo_result, demo_note)
            text = build_text_tab(explorer)
            compare = build_compare_tab()
            lab = build_lab_tab(explorer)
            details = build_details_tab(explorer)
            export = build_export_tab(has_slides=slides is not None)
            build_how_tab()
        page = Page(states, warning, tabs, stage, text, compare, lab, details, export)
        wire_events(blocks, page, calls, slides)
    blocks.queue(default_concurrency_limit=4, max_size=64)
    blocks.loaded_model = explorer.loaded
    return blocks


def header_markdown(explorer: Explorer, device_note: str) -> str:
    loaded = explorer.loaded
    line = ("**A3 Explorer** · any-order, any-subset autoregressive generation "
            "([arXiv 2601.13228](https://arxiv.org/abs/2601.13228)) · "
            f"model: {loaded.description} · given tokens: {explorer.given_grouping} · "
            f"{device_note or 'cpu'}")
    if not loaded.trained:
        line += f"\n\n> ⚠️ {loaded.notes[0] if loaded.notes else 'This model is untrained.'}"
    return line
