"""The stage, the offline player and the GIF draw a trace view (app.trace_view); the Plotly figures of
app.figures stay the reference. These tests run app/static/stage_core.js in Chromium, both on the stage's
payload and inside an exported player page (its inlined copy, on its embedded view), and take the GIF's
cells from `app.slides.frame_cells`; at every step of every decoder they compare what each shows with
what the reference figures show: grid cells (text, fill, ink, decided step) and the outlined cells, the
DAG's edge classes, both masks and their highlighted rows and their tick labels ("p:?" while open), the
tinted text, and the labels written across the cells of a character split over several tokens (and of bytes
that make no character, "‹EF BC›"). Also: the step palette stays distinguishable under simulated colour-vision
deficiencies."""

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_trace_view import byte_result, unicode_result

from app import figures
from app.render import sentence_html
from app.session import Explorer, Request
from app.slides import export_player, frame_cells
from app.stage import calls_summary, stage_payload
from app.trace_view import view_of_dict

STATIC = Path(__file__).resolve().parent.parent / "app" / "static"
TEXT = "The cat sat on the mat and [MASK:5] at the birds in the [MASK:2] tree."

RUNS = {  # method settings covering: groups of 2 in random order, model-chosen order, per-step groupings
    "plan-random": dict(method="A3 plan", order="random", group_size=2, seed=3),
    "dynamic": dict(method="A3 dynamic", k=2),
    "official": dict(method="official dynamic", k=2),
    "diffusion": dict(method="diffusion", k=2),
    "one-step": dict(method="one-step parallel", k=2),
    "ar": dict(method="AR baseline"),
    "unicode": None,  # characters split over several tokens, decided at different steps; whitespace tokens
    "bytes": None,  # byte tokens that make no character (EF BC, six times), among given non-ASCII text
    "long": None,  # words longer than a tick's 8 characters and a grid cell's 14 (LONG_TEXT)
}
LONG_TEXT = "Her extraordinarily understanding grandmother [MASK:3] the incomprehensibilities of kindergarten."


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


@pytest.fixture(scope="module")
def results(explorer):
    """run -> its Result, decoded once for the module."""
    cache = {}

    def get(run: str):
        if run not in cache:
            settings = RUNS[run]
            cache[run] = (unicode_result(explorer) if run == "unicode" else byte_result(explorer) if run == "bytes"
                          else explorer.decode(Request(text=LONG_TEXT)) if run == "long"
                          else explorer.decode(Request(text=TEXT, **settings)))
        return cache[run]

    return get


@pytest.fixture(scope="module")
def references(results):
    """(run, sort_by_group) -> what the reference figures show at every step, built once for the module."""
    cache = {}

    def get(run: str, sort_by_group: bool) -> list[dict]:
        if (run, sort_by_group) not in cache:
            cache[run, sort_by_group] = reference_steps(results(run), sort_by_group)
        return cache[run, sort_by_group]

    return get


@pytest.fixture(scope="module")
def core_page(browser):
    page = browser.new_page()
    page.set_content("<html><body></body></html>")
    page.add_script_tag(content=(STATIC / "stage_core.js").read_text() + "\nwindow.A3Core = A3Core;")
    yield page
    page.close()


ALL_STEPS = """([P, sorted]) => {
  const out = [];
  for (let step = -1; step < P.steps.length; step++) {
    const m = A3Core.masks(P, step, sorted);
    out.push({step, grid: A3Core.grid(P, step), sentence: A3Core.sentence(P, step), runs: A3Core.runLabels(P, step),
              ticks: A3Core.ticks(P, step),
              dag: A3Core.dag(P, step, false).edges, reduced: A3Core.dag(P, step, true).edges,
              order: m.order, content: Array.from(m.content), query: Array.from(m.query), highlight: m.highlight,
              summary: A3Core.caption(P, step).summary});
  }
  return out;
}"""


def rgb(color: str) -> tuple[int, ...]:
    """"#rrggbb" or "rgb(r, g, b)" -> (r, g, b), so hex and rgb() spellings of a colour compare equal."""
    return tuple(int(round(float(c))) for c in _rgb(color))


def dag_edges_by_class(fig) -> dict[str, set]:
    """Read the edges back from the reference DAG's arcs: each arc runs from x = u to x = v."""
    n_edges = fig.layout.meta["n_edges"]
    n_points = int(np.clip(150_000 // max(n_edges, 1), 4, 12))
    out = {}
    for name, cls in (("dependencies", "done"), ("later dependencies", "future"), ("into this step", "current")):
        trace = next(t for t in fig.data if t.name == name)
        xs = np.asarray(trace.x if trace.x is not None else [], dtype=float).reshape(-1, n_points + 1)
        out[cls] = {(int(round(r[0])), int(round(r[n_points - 1]))) for r in xs}
    return out


def grid_cells(grid, n_steps: int, length: int) -> list[dict]:
    """Per position, what the reference grid figure shows: text, fill, ink, decided step, outline."""
    layer = {t.name: np.asarray(t.z, dtype=float).ravel()[:length] for t in grid.data if t.type == "heatmap"}
    fixed = {name: next(t for t in grid.data if t.name == name).colorscale[0][1] for name in ("given", "open")}
    steps = figures.step_colors(n_steps)  # the colour bar's colours (zmin 0, zmax n - 1)
    text = next(t for t in grid.data if t.name == "cells")
    outlined = set(figures.outlined_cells(grid))
    out = []
    for p in range(length):
        d = layer["decided"][p]
        fill = fixed["given"] if not np.isnan(layer["given"][p]) else fixed["open"] if np.isnan(d) else steps[int(d)]
        out.append({"text": text.text[p], "fill": rgb(fill), "ink": rgb(text.textfont.color[p]),
                    "decided": None if np.isnan(d) else int(d), "current": p in outlined})
    return out


def grid_runs(grid) -> list[dict]:
    """The labels the reference grid writes across the cells of a split character: (x, row, text)."""
    trace = next(t for t in grid.data if t.name == "characters")
    return [{"x": float(x), "row": int(y), "text": text}
            for x, y, text in zip(trace.x or [], trace.y or [], trace.text or [], strict=True)]


def sentence_by_position(sentence: str) -> list[str]:
    """app.render.sentence_html's pieces (a split character is one: open while any of its tokens is open,
    current if any is), as each piece's class per position it covers (from 1)."""
    return [state for state, positions in re.findall(r'class="tok ([a-z ]+)" data-positions="([\d,]+)"', sentence)
            for _ in positions.split(",")]


def reference_steps(result, sort_by_group: bool) -> list[dict]:
    """What the reference figures (and the reference text, app.render.sentence_html) show at every step."""
    trace, labels = result.trace, result.labels
    reduced = figures.transitive_reduction(figures.dependency_graph(trace)).number_of_edges()
    out = []
    for step in range(-1, result.n_steps):
        masks = figures.mask_figure(trace, step, labels, sort_by_group=sort_by_group)
        grid = figures.grid_figure(trace, step, labels)
        out.append({
            "step": step,
            "cells": grid_cells(grid, result.n_steps, trace.plan.length),
            "runs": grid_runs(grid),
            "ticks": list(masks.data[0].x),
            "dag": dag_edges_by_class(figures.dag_figure(trace, step, labels)),
            "n_reduced": reduced,
            "order": masks.layout.meta["order"],
            **{name: np.asarray(next(t for t in masks.data if t.name == name).z).ravel().tolist()
               for name in ("content", "query")},
            "highlight": sorted(masks.layout.meta["highlight_rows"]),
            "sentence": sentence_by_position(sentence_html(result, step)),
            "summary": figures.step_summary(trace, step, timing=False),
        })
    return out


def as_plotly_cell(text: str) -> str:
    """A stage or GIF cell's label (cut at CELL_LABEL_CHARS: their type shrinks to fit) as a Plotly cell cuts
    it (MAX_LABEL_CHARS): the rest of the cell must match the reference as it is."""
    assert len(text) <= figures.CELL_LABEL_CHARS, text
    return figures.short_label(text) if len(text) > figures.MAX_LABEL_CHARS else text


def assert_core_shows_the_reference(shown: list[dict], reference: list[dict], where: str) -> None:
    """A3Core's output at every step (from the stage or the player) against the reference figures."""
    assert len(shown) == len(reference), where
    for js, ref in zip(shown, reference, strict=True):
        step = js["step"]
        at = f"{where}, step {step}"
        cells = [{"text": html.escape(as_plotly_cell(c["text"]), quote=False), "fill": rgb(c["color"]),
                  "ink": rgb(c["ink"]), "decided": c["decidedAt"] if c["state"] == "decided" else None,
                  "current": c["current"]}
                 for c in js["grid"]]
        assert cells == ref["cells"], at
        for cls in ("done", "future", "current"):
            assert {(e["u"], e["v"]) for e in js["dag"] if e["cls"] == cls} == ref["dag"][cls], (at, cls)
        assert len(js["reduced"]) == ref["n_reduced"], at
        assert js["order"] == ref["order"], at
        assert js["content"] == ref["content"] and js["query"] == ref["query"], at
        assert sorted(js["highlight"]) == ref["highlight"], at
        assert [t["state"] + (" current" if t["current"] else "") for t in js["sentence"] for _ in t["positions"]] \
            == ref["sentence"], at
        assert [{"x": (r["c0"] + r["c1"]) / 2, "row": r["row"], "text": html.escape(r["text"], quote=False)}
                for r in js["runs"]] == ref["runs"], at
        assert [f"{p}:{html.escape(js['ticks'][p], quote=False)}" for p in js["order"]] == ref["ticks"], at
        assert js["summary"] == ref["summary"], at


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("sort_by_group", [False, True])
def test_stage_core_shows_what_the_reference_figures_show(results, references, core_page, run, sort_by_group):
    result = results(run)
    payload = json.loads(json.dumps(stage_payload(result)))  # exactly what travels to the browser
    shown = core_page.evaluate(ALL_STEPS, [payload, sort_by_group])
    assert_core_shows_the_reference(shown, references(run, sort_by_group), f"stage, {run}")
    assert payload["before"]["summary"].startswith("Before decoding")
    assert payload["headline"] == calls_summary(result)


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("sort_by_group", [False, True])
def test_player_core_shows_what_the_reference_figures_show(explorer, results, references, browser, run,
                                                           sort_by_group, tmp_path):
    """The exported player page, from file://: its inlined A3Core on its embedded view (built from the
    exported trace dict, not from the live result)."""
    data = json.loads(explorer.trace_json(results(run)))
    page = browser.new_page()
    page.goto(export_player(data, tmp_path / "player.html").as_uri())
    shown = page.evaluate(f"(sorted) => ({ALL_STEPS})([window.A3Player.view, sorted])", sort_by_group)
    page.close()
    assert_core_shows_the_reference(shown, references(run, sort_by_group), f"player, {run}")


@pytest.mark.parametrize("run", list(RUNS))
def test_gif_frames_draw_the_reference_grid(explorer, results, references, run):
    """What each GIF frame draws per grid cell (text, fill, ink, outline) is what the reference grid shows."""
    view = view_of_dict(json.loads(explorer.trace_json(results(run))))
    for ref in references(run, False):
        drawn = [{"text": html.escape(as_plotly_cell(c.text), quote=False), "fill": c.fill, "ink": c.ink,
                  "current": c.outline}
                 for c in frame_cells(view, ref["step"])]
        want = [{k: v for k, v in cell.items() if k != "decided"} for cell in ref["cells"]]
        assert drawn == want, (run, ref["step"])
        assert view.caption(ref["step"]).summary == ref["summary"]


def test_calls_summary_counts_against_ar_and_groups_of_four(explorer):
    result = explorer.decode(Request(text="Mia found an old key. [MASK:14] It was a letter.", method="A3 plan"))
    assert calls_summary(result) == ("A3 plan (left to right): 14 model calls for 14 tokens · groups of 4 would take 4"
                                     " · AR needs 14 · No\u00a0stutter: on")
    free = explorer.decode(Request(text="Mia found an old key. [MASK:14] It was a letter.", method="A3 plan",
                                   no_repeat=0))
    assert calls_summary(free).endswith("AR needs 14 · No\u00a0stutter: off")
    grouped = explorer.decode(Request(text="Mia found an old key. [MASK:14] It was a letter.", method="A3 plan",
                                      group_size=4))
    assert calls_summary(grouped).startswith("A3 plan (left to right, groups of 4): 4 model calls for 14 tokens")


@pytest.mark.parametrize(("request_", "headline"), [
    (dict(method="A3 plan", order="right to left"), "A3 plan (right to left): 6 model calls for 6 tokens · groups"),
    (dict(method="A3 plan", order="outside-in", group_size=2), "A3 plan (outside-in, groups of 2): 3 model calls"),
    (dict(method="A3 dynamic", strategy="entropy", k=2), "A3 dynamic (entropy, k = 2): 3 model calls for 6 tokens"),
    (dict(method="diffusion"), "diffusion (confidence, k = 1): 6 model calls for 6 tokens · groups of 4 would take 2"),
    # one call for the whole blank: no groups to hold it against; the AR baseline is AR itself
    (dict(method="one-step parallel"), "one-step parallel (k = 1): 1 model call for 6 tokens · AR needs 6 · No"),
    (dict(method="AR baseline"), "AR baseline: 6 model calls for 6 tokens · No"),
])
def test_the_headline_names_the_order_and_settings_of_the_run(explorer, request_, headline):
    """A teacher comparing orders sees which one is on the stage (the headline once read "A3 plan" for all)."""
    result = explorer.decode(Request(text="Mia found an old key. [MASK:6] It was a letter.", **request_))
    assert calls_summary(result).startswith(headline)


def test_a_best_of_n_run_names_the_candidate_on_the_stage_and_the_one_kept(explorer):
    from app.trace_view import view_of_dict, view_of_result

    result = explorer.decode(Request(text="Mia found an old key. [MASK:6] It was a letter.", method="A3 best of N"))
    found = result.best_of_n
    kept = found.best.name
    assert view_of_result(result).title == f"A3 best of N · {kept}"  # not the kept decode's plan order
    decodes = found.model_calls - found.scoring_calls
    n = len(found.candidates)
    said = f"({n} decodes in {decodes} calls, scored in 1 call; on the stage: “{kept}”, the one kept)"
    assert said in calls_summary(result)
    other = next(i for i, c in enumerate(found.candidates) if c.name != kept)
    shown = explorer.best_of_n_candidate(result, other)
    name = found.candidates[other].name
    assert view_of_result(shown).title == f"A3 best of N · {name}"
    said = calls_summary(shown)
    assert f"; on the stage: “{name}”, not the one kept, “{kept}”)" in said
    exported = view_of_dict({**shown.trace.to_dict(explorer.loaded.tokenizer), "method": shown.method})
    assert exported.title == f"A3 best of N · {name}"  # the exports say the same


def test_empty_stage_says_what_to_do():
    payload = stage_payload(None)
    assert payload["empty"] and "Run" in payload["note"] and "[MASK]" in payload["note"]


@pytest.mark.parametrize("length, columns", [(5, 4), (12, 5), (42, 10), (64, 12), (128, 16), (256, 16)])
def test_grid_wraps_into_a_block_not_a_strip(length, columns):
    assert figures.grid_columns(length) == columns
    rows = -(-length // columns)
    assert length < 8 or rows >= 2  # a short sentence is a block of rows, never one thin strip


# --------------------------------------------------------------------------------------------------
# the palette under colour-vision deficiencies (Machado, Oliveira & Fernandes 2009, severity 1.0)

MACHADO = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def _rgb(color: str) -> np.ndarray:
    if color.startswith("#"):
        return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    return np.array([float(c) for c in color.removeprefix("rgb(").removesuffix(")").split(",")])


def _linear(rgb: np.ndarray) -> np.ndarray:
    c = rgb / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear: np.ndarray) -> np.ndarray:
    """Linear sRGB -> CIELAB (D65)."""
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def seen_as(color: str, deficiency: str | None) -> np.ndarray:
    linear = _linear(_rgb(color))
    if deficiency:
        linear = np.clip(np.array(MACHADO[deficiency]) @ linear, 0, 1)
    return _lab(linear)


def delta_e(a: str, b: str, deficiency: str | None) -> float:
    return float(np.linalg.norm(seen_as(a, deficiency) - seen_as(b, deficiency)))


@pytest.mark.parametrize("deficiency", [None, "protanopia", "deuteranopia", "tritanopia"])
@pytest.mark.parametrize("n_steps", [4, 8, 14])
def test_adjacent_step_colours_stay_distinguishable(deficiency, n_steps):
    """Up to 14 steps (a typical infill), neighbouring steps differ by a clearly visible ΔE (CIE76 > 5)
    even with the simulated deficiency; the ramp's ends stay far apart."""
    colors = figures.step_colors(n_steps)
    gaps = [delta_e(a, b, deficiency) for a, b in zip(colors, colors[1:], strict=False)]
    assert min(gaps) > 5, (deficiency, n_steps, [round(g, 1) for g in gaps])
    assert delta_e(colors[0], colors[-1], deficiency) > 50


@pytest.mark.parametrize("deficiency", [None, "protanopia", "deuteranopia", "tritanopia"])
def test_given_open_and_highlight_colours_read_apart_from_the_steps(deficiency):
    """Grey (given), near-white (open) and the current-step outline never pass for a step colour."""
    steps = figures.step_colors(64)
    for special, floor in ((figures.GIVEN_COLOR, 10), (figures.OPEN_COLOR, 10), (figures.HIGHLIGHT_COLOR, 10)):
        nearest = min(delta_e(special, c, deficiency) for c in steps)
        assert nearest > floor, (special, deficiency, round(nearest, 1))
    assert delta_e(figures.GIVEN_COLOR, figures.OPEN_COLOR, deficiency) > 10
