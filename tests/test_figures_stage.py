"""The stage draws in the browser; the Plotly figures of app.figures stay the reference. These tests run
app/static/stage_core.js in Chromium on payloads of real traces and compare, step by step, what it
shows with what the reference figures show: grid cells and colours, the outlined cells, the DAG's edge
classes, both masks and their highlighted rows, and the tinted text. Also: the step palette stays
distinguishable under simulated colour-vision deficiencies."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from app import figures
from app.render import sentence_html
from app.session import Explorer, Request
from app.stage import calls_summary, stage_payload

STATIC = Path(__file__).resolve().parent.parent / "app" / "static"
TEXT = "The cat sat on the mat and [MASK:5] at the birds in the [MASK:2] tree."

RUNS = {  # method settings covering: groups of 2 in random order, model-chosen order, per-step groupings
    "plan-random": dict(method="A3 plan", order="random", group_size=2, seed=3),
    "dynamic": dict(method="A3 dynamic", k=2),
    "official": dict(method="official dynamic", k=2),
    "diffusion": dict(method="diffusion", k=2),
    "one-step": dict(method="one-step parallel", k=2),
    "ar": dict(method="AR baseline"),
}


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


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
    out.push({step, grid: A3Core.grid(P, step), sentence: A3Core.sentence(P, step),
              dag: A3Core.dag(P, step, false).edges, reduced: A3Core.dag(P, step, true).edges,
              order: m.order, content: Array.from(m.content), query: Array.from(m.query), highlight: m.highlight});
  }
  return out;
}"""


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


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("sort_by_group", [False, True])
def test_stage_core_shows_what_the_reference_figures_show(explorer, core_page, run, sort_by_group):
    result = explorer.decode(Request(text=TEXT, **RUNS[run]))
    trace, labels = result.trace, result.labels
    payload = json.loads(json.dumps(stage_payload(result)))  # exactly what travels to the browser
    shown = core_page.evaluate(ALL_STEPS, [payload, sort_by_group])
    colors = figures.step_colors(result.n_steps)
    length = trace.plan.length
    assert len(shown) == result.n_steps + 1
    for js in shown:
        step = js["step"]
        # the order grid: which cells are decided (and at which step, in which colour), given, open; the outline
        grid = figures.grid_figure(trace, step, labels)
        layer = {t.name: np.asarray(t.z, dtype=float).ravel()[:length] for t in grid.data if t.type == "heatmap"}
        cells = js["grid"]
        decided = [c["decidedAt"] if c["state"] == "decided" else np.nan for c in cells]
        np.testing.assert_array_equal(np.asarray(decided, dtype=float), layer["decided"])
        assert [c["state"] == "given" for c in cells] == list(~np.isnan(layer["given"]))
        assert all(c["color"] == colors[c["decidedAt"]] for c in cells if c["state"] == "decided")
        ref_text = list(next(t for t in grid.data if t.name == "cells").text)
        assert [figures._plain(c["text"]) for c in cells] == ref_text
        assert sorted(c["p"] for c in cells if c["current"]) == figures.outlined_cells(grid)
        # the DAG: the same edges, classed the same way (done / into this step / later)
        ref = dag_edges_by_class(figures.dag_figure(trace, step, labels))
        for cls in ("done", "future", "current"):
            assert {(e["u"], e["v"]) for e in js["dag"] if e["cls"] == cls} == ref[cls], (step, cls)
        reduced = figures.transitive_reduction(figures.dependency_graph(trace))
        assert len(js["reduced"]) == reduced.number_of_edges()
        # the masks: same display order, same cells, same highlighted rows
        masks = figures.mask_figure(trace, step, labels, sort_by_group=sort_by_group)
        assert js["order"] == masks.layout.meta["order"]
        for name in ("content", "query"):
            z = np.asarray(next(t for t in masks.data if t.name == name).z).ravel()
            np.testing.assert_array_equal(np.asarray(js[name]), z)
        assert sorted(js["highlight"]) == sorted(masks.layout.meta["highlight_rows"])
        # the text: the same tokens given, decided, open and current
        html = sentence_html(result, step)
        ref_classes = re.findall(r'class="tok ([a-z ]+)"', html)
        js_classes = [t["state"] + (" current" if t["current"] else "") for t in js["sentence"]]
        assert js_classes == ref_classes
    assert payload["summaries"][0].startswith("Before decoding")
    assert payload["headline"] == calls_summary(result)


def test_calls_summary_counts_against_ar_and_groups_of_four(explorer):
    result = explorer.decode(Request(text="Mia found an old key. [MASK:14] It was a letter.", method="A3 plan"))
    assert calls_summary(result) == "A3 plan: 14 model calls for 14 tokens · groups of 4 would take 4 · AR needs 14"
    grouped = explorer.decode(Request(text="Mia found an old key. [MASK:14] It was a letter.", method="A3 plan",
                                      group_size=4))
    assert calls_summary(grouped).startswith("A3 plan: 4 model calls for 14 tokens")


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
