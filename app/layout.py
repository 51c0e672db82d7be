"""The Gradio page. `build_demo(explorer)` creates components and wiring only; every callback is a
thin adapter over `app.session.Explorer` (the model) or `app.render.render_step` (the figures).

The step slider is the one source of truth for "where we are": the first/prev/next/last buttons
change it in the browser (no server round trip, never dropped: trigger_mode="multiple"), the play
timer advances it, and a single `step.change` re-renders every figure from the stored trace.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import gradio as gr

from app.picker import TokenPicker
from app.render import clamp_step, render_step
from app.session import METHODS, ORDER_NAMES, STRATEGIES, Explorer, InputError, Request, Result

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"

EXAMPLES = [
    # text, method, order, group size, k, custom group ids
    ["Mia found an old key under the porch. [MASK:14] Inside the box was a letter from her grandmother. "
     "She read it twice and smiled.", "A3 plan", "left to right", 1, 1, ""],
    ["The recipe was simple: mix the flour and the sugar, [MASK:8], then bake it for twenty minutes.",
     "A3 plan", "outside-in", 1, 1, ""],
    ["Tom went to the market early in the morning to buy [MASK:10] for the family dinner.",
     "A3 dynamic", "left to right", 1, 1, ""],
    # the paper's Figure 1: G1 = {1,2,3} given, G2 = {5,6}, G3 = {4} (position 0 is the start token)
    ["The cat sat [MASK:3]", "A3 plan", "custom group ids", 1, 1, "0 1 1 1 3 2 2"],
    ["[MASK:6] the dog barked all night long, so nobody on the street could sleep.",
     "diffusion-style", "left to right", 1, 2, ""],
]

HOW_A3_WORKS = (STATIC / "how_a3_works.md").read_text()

# Keyboard: ← / → step, space plays or pauses (ignored while typing in a field).
SHORTCUTS = """
<script>
document.addEventListener('keydown', (e) => {
  const t = e.target, tag = (t && t.tagName || '').toLowerCase();
  if (tag === 'input' || tag === 'textarea' || (t && t.isContentEditable) || e.altKey || e.ctrlKey || e.metaKey) return;
  // a focused button would also fire on space: take the focus away so only the shortcut acts
  if (tag === 'button') t.blur();
  const click = (id) => { const b = document.querySelector('#' + id); if (b) { b.click(); e.preventDefault(); } };
  if (e.key === 'ArrowRight') click('next-btn');
  else if (e.key === 'ArrowLeft') click('prev-btn');
  else if (e.key === ' ' || e.code === 'Space') click('play-btn');
  else if (e.key === 'Home') click('first-btn');
  else if (e.key === 'End') click('last-btn');
});
</script>
"""


def launch_kwargs() -> dict:
    """App-level settings that Gradio 6 takes in launch() (tests launch with the same ones)."""
    return {"theme": gr.themes.Soft(), "css": (STATIC / "app.css").read_text(), "head": SHORTCUTS,
            "footer_links": ["gradio", "api", "settings"], "show_error": False}


def build_demo(explorer: Explorer, *, device_note: str = "", gpu=None) -> gr.Blocks:
    """The page for one explorer. `gpu` wraps the model calls (spaces.GPU on ZeroGPU)."""
    gpu = gpu or (lambda fn: fn)
    loaded = explorer.loaded

    @gpu
    def decode(request: Request) -> Result:
        return explorer.decode(request)

    @gpu
    def compare(request: Request):
        return explorer.compare(request)

    with gr.Blocks(title="A3 Explorer") as demo:
        result_state = gr.State(None)
        playing = gr.State(False)
        gr.Markdown(header_markdown(explorer, device_note), elem_id="header")
        warning = gr.Markdown("", elem_id="warning")

        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                text = gr.Textbox(label="Text: [MASK] is one blank token, [MASK:N] is N of them", lines=3,
                                  value=EXAMPLES[0][0], elem_id="text")
                with gr.Row():
                    tokenize_btn = gr.Button("Tokenize (then click or drag over tokens to mask them)",
                                             elem_id="tokenize-btn", size="sm")
                    unmask_btn = gr.Button("Unmask all", elem_id="unmask-btn", size="sm")
                picker = TokenPicker(elem_id="picker")
            with gr.Column(scale=2):
                method = gr.Radio(list(METHODS), value="A3 plan", label="Decoding", elem_id="method")
                with gr.Row():
                    order = gr.Dropdown(list(ORDER_NAMES), value="left to right", label="Order (A3 plan)",
                                        elem_id="order")
                    group_size = gr.Slider(1, 8, value=1, step=1, label="Group size s (A3 plan)",
                                           elem_id="group-size")
                with gr.Row():
                    strategy = gr.Radio(list(STRATEGIES), value="confidence", label="Dynamic: commit by",
                                        elem_id="strategy")
                    k = gr.Slider(1, 8, value=1, step=1, label="Tokens per step k (dynamic, diffusion)",
                                  elem_id="k")
                with gr.Accordion("Sampling", open=False):
                    with gr.Row():
                        temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature (0 = greedy)")
                        seed = gr.Number(value=0, precision=0, label="seed")
                    with gr.Row():
                        top_k = gr.Slider(0, 100, value=0, step=1, label="top-k (0 = off)")
                        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top-p (1 = off)")
                with gr.Accordion("Custom group ids (researchers)", open=False):
                    custom_groups = gr.Textbox(
                        label="One integer per position, start token first (order: custom group ids)",
                        placeholder="e.g. 0 1 1 1 3 2 2", elem_id="custom-groups")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
                    compare_btn = gr.Button("Compare methods", elem_id="compare-btn")
        gr.Examples(EXAMPLES, inputs=[text, method, order, group_size, k, custom_groups],
                    label="Examples (click, then Run)")

        with gr.Row(elem_id="player", equal_height=True):
            first_btn = gr.Button("« first", elem_id="first-btn", size="sm", min_width=70)
            prev_btn = gr.Button("‹ prev", elem_id="prev-btn", size="sm", min_width=70)
            play_btn = gr.Button("▶ play", elem_id="play-btn", size="sm", min_width=80)
            next_btn = gr.Button("next ›", elem_id="next-btn", size="sm", min_width=70)
            last_btn = gr.Button("last »", elem_id="last-btn", size="sm", min_width=70)
            step = gr.Slider(-1, 0, value=-1, step=1, label="Step (← → space)", elem_id="step", scale=4)
            n_steps = gr.Number(value=0, precision=0, visible="hidden", elem_id="n-steps")
            speed = gr.Slider(0.1, 2.0, value=0.5, step=0.1, label="seconds per step", elem_id="speed", scale=1)
        timer = gr.Timer(0.5, active=False)
        summary = gr.Markdown("Run a decoding to step through it.", elem_id="summary")
        sentence = gr.HTML("", elem_id="sentence")

        with gr.Row():
            grid = gr.Plot(label="Generation order", elem_id="grid-plot", scale=3)
            with gr.Column(scale=2):
                dag = gr.Plot(label="Group dependency DAG", elem_id="dag-plot")
                reduce_toggle = gr.Checkbox(False, label="transitive reduction", elem_id="reduce")
        with gr.Row():
            with gr.Column(scale=3):
                masks = gr.Plot(label="Two-stream attention masks", elem_id="mask-plot")
                with gr.Row():
                    sort_toggle = gr.Checkbox(False, label="sort positions by group", elem_id="sort")
                    verdict = gr.Markdown("", elem_id="verdict")
            with gr.Column(scale=2):
                logprob = gr.Plot(label="log-probability of each committed group", elem_id="logprob-plot")
        candidates = gr.Dataframe(label="Candidates at this step", interactive=False, elem_id="candidates",
                                  wrap=True)

        with gr.Accordion("Compare methods on this input", open=False, elem_id="compare-panel") as compare_panel:
            compare_table = gr.Dataframe(interactive=False, wrap=True, elem_id="compare-table")
        with gr.Accordion("Export", open=False):
            gr.Markdown("Each figure has a camera button (top right of the plot) that saves it as PNG.")
            with gr.Row():
                export_trace = gr.DownloadButton("Trace (JSON)", elem_id="export-trace")
                export_csv = gr.DownloadButton("Masks at this step (CSV, zip)", elem_id="export-csv")
                export_npy = gr.DownloadButton("Masks at this step (NPY, npz)", elem_id="export-npz")
                export_html = gr.DownloadButton("Figures at this step (HTML)", elem_id="export-html")
        with gr.Accordion("How A3 works", open=False, elem_id="how"):
            gr.Markdown(HOW_A3_WORKS)

        # ------------------------------------------------------------------------- callbacks
        settings = [text, picker, method, order, group_size, strategy, k, temperature, top_k, top_p, seed,
                    custom_groups]

        def request_of(*values) -> Request:
            (text_, picker_, method_, order_, size_, strategy_, k_, temp_, top_k_, top_p_, seed_, groups_) = values
            return Request(text_, picker_, method_, order_, int(size_ or 1), strategy_, int(k_ or 1),
                           float(temp_ or 0), int(top_k_ or 0), float(top_p_ or 1), int(seed_ or 0), groups_ or "")

        def on_tokenize(text_):
            try:
                return explorer.picker_from_text(text_), ""
            except InputError as err:
                return gr.skip(), warn(err)

        def on_unmask(picker_):
            if not picker_ or not picker_.get("mask"):
                return gr.skip()
            locked = set(picker_.get("locked", []))
            keep = [m if i in locked else False for i, m in enumerate(picker_["mask"])]
            return {**picker_, "mask": keep}

        def on_run(*values):
            try:
                request = request_of(*values)
                result = decode(request)
                picker_value = explorer.picker_from_text(request.text)
                picker_value["mask"] = [not g for g in result.trace.given]
            except InputError as err:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), warn(err), gr.skip(), gr.skip()
            except Exception as err:  # never a stack trace in the page
                log.exception("decode failed")
                return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), warn(f"Something went wrong: {err}"),
                        gr.skip(), gr.skip())
            last = result.n_steps - 1
            # start from the beginning and play: visitors see the order unfold
            return (result, gr.Slider(minimum=-1, maximum=last, value=-1, step=1), result.n_steps, picker_value, "",
                    True, gr.Timer(active=True))

        def on_render(result, step_, reduce_, sort_):
            if result is None:
                return (gr.skip(),) * 8
            rendered = render_step(result, step_, reduce=reduce_, sort_by_group=sort_)
            headers, rows = rendered.candidates
            return (rendered.summary, rendered.sentence, rendered.grid, rendered.dag, rendered.masks,
                    explorer.verdict(result, clamp_step(result, step_)),
                    gr.Dataframe(value=rows, headers=headers), rendered.logprob)

        def on_play(playing_, step_, n_):
            if playing_:
                return False, gr.Timer(active=False), gr.skip(), gr.Button("▶ play")
            restart = -1 if int(step_ or -1) >= int(n_ or 0) - 1 else gr.skip()
            return True, gr.Timer(active=True), restart, gr.Button("‖ pause")

        def on_tick(step_, n_):
            nxt = int(step_) + 1
            if nxt >= int(n_ or 0):
                return gr.skip(), gr.Timer(active=False), False, gr.Button("▶ play")
            end = nxt >= int(n_) - 1
            return (nxt, gr.Timer(active=not end), not end, gr.Button("▶ play") if end else gr.Button("‖ pause"))

        def on_compare(*values):
            try:
                headers, rows = compare(request_of(*values))
            except InputError as err:
                return gr.skip(), warn(err), gr.skip()
            except Exception as err:
                log.exception("compare failed")
                return gr.skip(), warn(f"Something went wrong: {err}"), gr.skip()
            return gr.Dataframe(value=rows, headers=headers), "", gr.Accordion(open=True)

        # one group for every event that runs the model: one at a time on a CPU (it uses every core),
        # two on a GPU (a 135M model leaves room for a second request)
        model_events = dict(concurrency_id="model", concurrency_limit=2 if loaded.device.type == "cuda" else 1)
        render_outputs = [summary, sentence, grid, dag, masks, verdict, candidates, logprob]
        tokenize_btn.click(on_tokenize, text, [picker, warning], api_visibility="private")
        text.submit(on_tokenize, text, [picker, warning], api_visibility="private")
        unmask_btn.click(on_unmask, picker, picker, api_visibility="private")
        run_btn.click(on_run, settings, [result_state, step, n_steps, picker, warning, playing, timer],
                      api_visibility="private", **model_events).then(
            lambda: gr.Button("‖ pause"), None, play_btn, api_visibility="private")
        compare_btn.click(on_compare, settings, [compare_table, warning, compare_panel], api_visibility="private",
                          **model_events)
        gr.on([result_state.change, step.change, reduce_toggle.change, sort_toggle.change], on_render,
              [result_state, step, reduce_toggle, sort_toggle], render_outputs, trigger_mode="always_last",
              show_progress="hidden", concurrency_limit=None, api_visibility="private")
        # stepping happens in the browser; step.change above does the drawing
        js_step = dict(fn=None, inputs=[step, n_steps], outputs=step, trigger_mode="multiple",
                       api_visibility="private", queue=False)
        first_btn.click(js="(s, n) => -1", **js_step)
        prev_btn.click(js="(s, n) => Math.max(-1, s - 1)", **js_step)
        next_btn.click(js="(s, n) => Math.min(n - 1, s + 1)", **js_step)
        last_btn.click(js="(s, n) => n - 1", **js_step)
        play_btn.click(on_play, [playing, step, n_steps], [playing, timer, step, play_btn], api_visibility="private")
        timer.tick(on_tick, [step, n_steps], [step, timer, playing, play_btn], api_visibility="private")
        speed.change(lambda s: gr.Timer(value=float(s)), speed, timer, api_visibility="private")

        export_trace.click(lambda r: export(r, "trace.json", explorer.trace_json), result_state, export_trace,
                           api_visibility="private")
        export_csv.click(lambda r, s: export(r, f"masks_step{s}.zip", lambda x: explorer.masks_csv(x, int(s))),
                         [result_state, step], export_csv, api_visibility="private")
        export_npy.click(lambda r, s: export(r, f"masks_step{s}.npz", lambda x: explorer.masks_npz(x, int(s))),
                         [result_state, step], export_npy, api_visibility="private")
        export_html.click(lambda r, s, red, srt: export(r, f"figures_step{s}.html",
                                                        lambda x: figures_html(x, s, red, srt)),
                          [result_state, step, reduce_toggle, sort_toggle], export_html, api_visibility="private")

        def infill(text: str, mode: str = "A3 plan", seed: int = 0) -> tuple[str, str]:
            """Fill the [MASK] / [MASK:N] blanks of `text` with the named method (A3 plan, A3 dynamic,
            official dynamic, diffusion-style, AR baseline); returns (filled text, trace as JSON)."""
            try:
                return gpu(explorer.infill)(text, mode, int(seed))
            except InputError as err:
                raise gr.Error(str(err)) from None

        gr.api(infill, api_name="infill", **model_events)
        demo.load(on_tokenize, text, [picker, warning], api_visibility="private")
    demo.queue(default_concurrency_limit=4, max_size=64)
    demo.loaded_model = loaded
    return demo


def warn(message) -> str:
    gr.Warning(str(message))
    return f"⚠️ {message}"


def export(result: Result | None, name: str, make) -> str | None:
    if result is None:
        gr.Warning("Run a decoding first; there is nothing to export yet.")
        return None
    data = make(result)
    path = Path(tempfile.mkdtemp(prefix="a3-export-")) / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def figures_html(result: Result, step, reduce, sort) -> str:
    rendered = render_step(result, step, reduce=reduce, sort_by_group=sort)
    parts = [f"<h2>A3 Explorer · {result.method} · step {clamp_step(result, step)}</h2><p>{rendered.summary}</p>"]
    for i, fig in enumerate((rendered.grid, rendered.dag, rendered.masks, rendered.logprob)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    return "<html><head><meta charset='utf-8'></head><body>" + "".join(parts) + "</body></html>"


def header_markdown(explorer: Explorer, device_note: str) -> str:
    loaded = explorer.loaded
    lines = [
        "# A3 Explorer: any-order, any-subset autoregressive generation",
        "Mask any spans of a text, pick an order, and step through how an **A3** model "
        "([arXiv 2601.13228](https://arxiv.org/abs/2601.13228)) fills them in, one group at a time: "
        "the order grid, the group dependency DAG and the two attention streams, all linked to the step.",
        f"**Model:** {loaded.description} · **device:** {device_note or 'cpu'}",
    ]
    if not loaded.trained:
        lines.append(f"> ⚠️ {loaded.notes[0] if loaded.notes else 'This model is untrained.'}")
    return "\n\n".join(lines)
