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

import os
from pathlib import Path

import gradio as gr

from app import downloads
from app.session import Explorer, Result
from app.ui.compare_tab import build_compare_tab
from app.ui.details_tab import build_details_tab
from app.ui.export_tab import build_export_tab, slides_module
from app.ui.how_tab import HOW_A3_WORKS, build_how_tab
from app.ui.lab_tab import build_lab_tab
from app.ui.model_calls import model_calls
from app.ui.sessions import release_sessions
from app.ui.shared import States
from app.ui.stage_tab import build_stage_tab
from app.ui.text_tab import EXAMPLES, build_text_tab
from app.ui.wiring import Page, wire_events

__all__ = ["EXAMPLES", "HOW_A3_WORKS", "build_demo", "header_markdown", "launch_kwargs", "slides_module"]

STATIC = Path(__file__).resolve().parent / "static"

# Keyboard: ← / → step, space plays or pauses, Home / End, P presentation (Escape leaves it). The keys
# belong to the stage: they act only while the stage is on screen, and never on a focused control other
# than the stage's own buttons, its slider and its tab (a text field, a slider, a button elsewhere keeps
# its own keys). Space on a stage button reached with Tab presses that button.
SHORTCUTS = """
<script>
(() => {
  const KEYS = {ArrowRight: 'next-btn', ArrowLeft: 'prev-btn', ' ': 'play-btn', Home: 'first-btn', End: 'last-btn',
                p: 'present-btn', P: 'present-btn'};
  const CONTROLS = 'input, textarea, select, button, a[href], summary, ' +
    '[contenteditable]:not([contenteditable=false]), ' +
    '[role=button], [role=slider], [role=tab], [role=listbox], [role=option], [role=combobox], [role=radio], ' +
    '[role=checkbox], [role=menuitem], [role=textbox], [role=spinbutton]';
  const stageShown = () => {
    const stage = document.querySelector('#stage .a3s');
    return !!stage && stage.getClientRects().length > 0;
  };
  const stageOwn = (t) => t.id === 'tab-stage-button' ||
    (!!t.closest('#stage') && (t.tagName === 'BUTTON' || t.id === 'stage-step'));
  // the button that has the focus because it was clicked (not reached with Tab); any key press makes
  // :focus-visible match, so it cannot tell the two apart
  let clicked = null;
  document.addEventListener('pointerdown', (e) => {
    clicked = e.target instanceof Element ? e.target.closest('button') : null;
  }, true);
  document.addEventListener('focusin', (e) => { if (e.target !== clicked) clicked = null; }, true);
  document.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || e.defaultPrevented) return;
    if (e.key === 'Escape' && document.documentElement.classList.contains('a3-present')) {
      document.querySelector('#stage #present-btn').click();  // Escape leaves presentation mode, from anywhere
      return;
    }
    const id = KEYS[e.key] || (e.code === 'Space' ? 'play-btn' : null);
    if (!id || !stageShown()) return;
    const t = e.target instanceof Element && e.target !== document.body ? e.target : null;
    if (t && t.closest(CONTROLS) && !stageOwn(t)) return;
    // a stage button reached with Tab: Space presses it, as it presses any button (after a click, when the
    // button keeps the focus without showing it, Space still plays or pauses)
    if (t && t.tagName === 'BUTTON' && t.id !== 'tab-stage-button' && id === 'play-btn' && t !== clicked) return;
    const button = document.querySelector('#stage #' + id);
    if (!button) return;
    e.preventDefault();
    if (t) t.blur();  // the focused stage button or slider would act on the key too
    button.click();
  });
})();
</script>
"""

# A Plotly figure updated while its tab is hidden is drawn at Plotly's default 700 px, whatever its box;
# when a tab is shown (by a click or by the server), every figure now visible is fitted to its box again.
# The stage, shown, starts at the page's top.
FIT_PLOTS = """
<script>
(() => {
  const fitPlots = () => {
    if (!window.Plotly || !window.Plotly.Plots) return;
    document.querySelectorAll('.js-plotly-plot').forEach((plot) => {
      const svg = plot.querySelector('.main-svg');
      if (!svg || !plot.getClientRects().length) return;  // not drawn yet, or hidden: fitted when shown
      const box = plot.getBoundingClientRect(), drawn = svg.getBoundingClientRect();
      if (box.width > 0 && Math.abs(drawn.width - box.width) > 1) window.Plotly.Plots.resize(plot);
    });
  };
  const soon = () => { requestAnimationFrame(fitPlots); setTimeout(fitPlots, 150); setTimeout(fitPlots, 600); };
  new MutationObserver((records) => {
    soon();
    // the stage opened from below the fold (Run at the foot of a long Your text tab) opens at the page's top:
    // its header, warning line and controls in view
    const opened = records.some((r) => r.target.id === 'tab-stage-button' && r.oldValue !== 'true' &&
                                      r.target.getAttribute('aria-selected') === 'true');
    if (opened && window.scrollY > 0) window.scrollTo({top: 0});
  }).observe(document.documentElement, {subtree: true, attributes: true, attributeFilter: ['aria-selected'],
                                        attributeOldValue: true});
  window.a3FitPlots = fitPlots;
})();
</script>
"""

# A number typed outside a setting's range (temperature -1, top-p 0) would stay in its box while the slider
# sends the nearest value it allows: the box is set to that value as the field is left, so what it shows is
# what runs.
CLAMP_NUMBERS = """
<script>
(() => {
  document.addEventListener('change', (e) => {
    const box = e.target;
    if (!(box instanceof HTMLInputElement) || box.type !== 'number' || box.value === '') return;
    const value = Number(box.value), low = box.min === '' ? -Infinity : Number(box.min),
      high = box.max === '' ? Infinity : Number(box.max);
    if (!Number.isFinite(value) || (value >= low && value <= high)) return;
    box.value = String(Math.min(high, Math.max(low, value)));
    box.dispatchEvent(new Event('input', {bubbles: true}));
    box.dispatchEvent(new Event('change', {bubbles: true}));
  }, true);
})();
</script>
"""


def launch_kwargs() -> dict:
    """App-level settings that Gradio 6 takes in launch() (tests launch with the same ones)."""
    return {"theme": gr.themes.Soft(), "css": (STATIC / "app.css").read_text(),
            "head": SHORTCUTS + FIT_PLOTS + CLAMP_NUMBERS,
            "footer_links": ["gradio", "api", "settings"], "show_error": False}


QUEUE_SIZE = 64  # events waiting at once, every visitor's together; one more is told at once that the app is busy
QUEUE_SIZE_ENV = "A3_QUEUE_SIZE"


def queue_size(value=None) -> int:
    """The queue's size: `value`, else A3_QUEUE_SIZE, else QUEUE_SIZE; a positive whole number, or ValueError
    saying so. A full queue does not hang a visitor: Gradio refuses the event at once (HTTP 503), the page
    shows "This application is currently busy. Please try again." and gradio_client raises
    QueueError("Queue is full! Please try again.")."""
    raw = value if value is not None else (os.environ.get(QUEUE_SIZE_ENV, "").strip() or QUEUE_SIZE)
    try:
        size = int(raw)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or str(size) != str(raw).strip():
        raise ValueError(f"The queue size ({QUEUE_SIZE_ENV} or --queue-size) must be a positive whole number of "
                         f"events (default {QUEUE_SIZE}); got {raw!r}.")
    return size


def build_demo(explorer: Explorer, *, device_note: str = "", model_note: str = "", gpu=None,
               demo: tuple[Result | None, str] | None = None, max_queue: int | None = None) -> gr.Blocks:
    """The page for one explorer. `gpu` wraps the model calls (spaces.GPU on ZeroGPU); `demo` is the
    example the stage opens with (app.demo_trace.load_demo), decoded before any page loads; `max_queue`
    the queue's size (`queue_size`). A tab's runs are let go when it closes or idles (app.ui.sessions;
    `blocks.releaser`)."""
    calls = model_calls(explorer, gpu)
    demo_result, demo_note = demo if demo is not None else (None, "")
    slides = slides_module()
    with gr.Blocks(title="A3 Explorer", delete_cache=downloads.CACHE_LIFETIME) as blocks:
        states = States.create(demo_result)
        gr.Markdown(header_markdown(explorer, device_note, model_note), elem_id="header")
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
        blocks.releaser = release_sessions(blocks, states)  # a closed or idle tab's runs go (app.ui.sessions)
    blocks.queue(default_concurrency_limit=4, max_size=queue_size(max_queue))
    blocks.loaded_model = explorer.loaded
    return blocks


GIVEN_READ = {"causal": "given tokens read left to right", "joint": "given tokens read as one group, both ways"}


def header_markdown(explorer: Explorer, device_note: str, model_note: str = "") -> str:
    """The page's one header line: the app, then in plain words which model runs (for the default model,
    its base weights by content hash: app.model_note), on what (CPU or GPU) and in which precision
    (app.device_note), and how it reads the given tokens. Other notes about the model go on this line; kept
    short, so that for the default model on a CPU it fits one line at 1366 px. An untrained model adds its
    warning below."""
    loaded = explorer.loaded
    grouping = explorer.given_grouping
    line = ('**A3 Explorer** ([paper](https://arxiv.org/abs/2601.13228 "arXiv 2601.13228: any-order, any-subset '
            'autoregressive modeling")) · '
            f"{model_note or loaded.description} · {device_note or 'CPU'} · "
            f"{GIVEN_READ.get(grouping, f'given tokens: {grouping}')}")
    if not loaded.trained:
        line += f"\n\n> ⚠️ {loaded.notes[0] if loaded.notes else 'This model is untrained.'}"
    return line
