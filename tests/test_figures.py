"""The figure builders draw what the trace says: checked by reading the figures' data back."""

from __future__ import annotations

import time

import networkx as nx
import numpy as np
import pytest
import torch

from app import figures
from model.decoding import MODES, collect, run_decoder
from model.masks import group_order, two_stream_masks
from model.plans import custom_plan, make_plan

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTH = 40


def labels_for(trace) -> list[str]:
    return [f"w{t}" for t in trace.final_ids]


def decode(model, mode: str, *, length: int = LENGTH, k: int = 2, group_size: int = 3):
    ids = torch.randint(0, 101, (length,), generator=torch.Generator().manual_seed(0))
    given = torch.ones(length, dtype=torch.bool)
    given[length // 4: length // 4 + length * 3 // 8] = False
    given[-3:] = False  # two blank spans
    plan = make_plan(ids, given=given, order="random", group_size=group_size,
                     generator=torch.Generator().manual_seed(1))
    extra = {"k": k} if mode in ("dynamic", "official_dynamic", "diffusion", "one_step_parallel") else {}
    return collect(run_decoder(mode, model, plan, **extra))


@pytest.fixture(scope="module")
def traces(tiny):
    return {mode: decode(tiny, mode) for mode in MODES}


def trace_named(fig, name):
    return next(t for t in fig.data if t.name == name)


def every_step(trace):
    return range(-1, len(trace.steps))


# --------------------------------------------------------------------------------------------------
# the order grid


@pytest.mark.parametrize("mode", ["plan", "dynamic", "ar_baseline"])
def test_grid_colours_exactly_the_decided_cells_and_outlines_this_step(traces, mode):
    trace = traces[mode]
    decided = np.array(trace.decided_step())
    given = np.array(trace.given)
    for step in every_step(trace):
        fig = figures.grid_figure(trace, step, labels_for(trace), columns=16)
        z = np.asarray(trace_named(fig, "decided").z, dtype=float).ravel()
        coloured = np.flatnonzero(~np.isnan(z)).tolist()
        assert coloured == np.flatnonzero((decided >= 0) & (decided <= step)).tolist()
        np.testing.assert_array_equal(z[coloured], decided[coloured])
        grey = np.asarray(trace_named(fig, "given").z, dtype=float).ravel()
        assert np.flatnonzero(~np.isnan(grey)).tolist() == np.flatnonzero(given).tolist()
        current = trace.steps[step].positions if step >= 0 else []
        assert figures.outlined_cells(fig, columns=16) == sorted(current)
        assert fig.layout.meta["current_positions"] == list(current)
        text = list(trace_named(fig, "cells").text)
        assert [i for i, t in enumerate(text) if t == "?"] == np.flatnonzero(~given & (decided > step)).tolist()
        assert fig.layout.yaxis.autorange == "reversed" and fig.layout.height > 0


def test_grid_cell_text_is_short_and_plain():
    trace = custom_trace()
    labels = ["a very long token", "<b>", "line\nbreak"] + ["x"] * (trace.plan.length - 3)
    text = list(trace_named(figures.grid_figure(trace, len(trace.steps) - 1, labels), "cells").text)
    assert text[0] == "a very …" and text[1] == "&lt;b&gt;" and "\n" not in text[2]
    assert figures.short_label(" cat\n") == "cat↵" and figures.short_label(" ") == "·"  # spaces only: visible


# --------------------------------------------------------------------------------------------------
# the dependency DAG


def test_plan_dag_has_every_earlier_step_and_its_reduction_is_a_chain(traces):
    trace = traces["plan"]
    graph = figures.dependency_graph(trace)
    names = ["given"] + [f"s{t}" for t in range(len(trace.steps))]
    assert set(graph.edges()) == {(u, v) for i, v in enumerate(names) for u in names[:i]}
    assert graph.nodes["s0"]["positions"] == trace.steps[0].positions
    reduced = figures.transitive_reduction(graph)
    assert set(reduced.edges()) == set(zip(names, names[1:], strict=False))
    assert set(reduced.edges()) == set(nx.transitive_reduction(graph).edges())
    assert dict(reduced.nodes(data=True)) == dict(graph.nodes(data=True))


def test_dag_edges_per_mode(traces):
    steps = lambda trace: [f"s{t}" for t in range(len(trace.steps))]  # noqa: E731
    one_step = figures.dependency_graph(traces["one_step_parallel"])
    assert set(one_step.edges()) == {("given", v) for v in steps(traces["one_step_parallel"])}
    for mode in ("dynamic", "official_dynamic", "diffusion", "ar_baseline"):
        names = ["given"] + steps(traces[mode])
        assert set(figures.dependency_graph(traces[mode]).edges()) == {
            (u, v) for i, v in enumerate(names) for u in names[:i]}, mode


def test_transitive_reduction_agrees_with_networkx_on_a_random_dag():
    rng = np.random.default_rng(0)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(30))
    graph.add_edges_from((i, j) for i in range(30) for j in range(i + 1, 30) if rng.random() < 0.2)
    assert set(figures.transitive_reduction(graph).edges()) == set(nx.transitive_reduction(graph).edges())


@pytest.mark.parametrize("reduce", [False, True])
def test_dag_figure_highlights_the_current_node_and_its_edges(traces, reduce):
    trace = traces["plan"]
    for step in every_step(trace):
        fig = figures.dag_figure(trace, step, labels_for(trace), reduce=reduce)
        meta = fig.layout.meta
        assert meta["current_node"] == (f"s{step}" if step >= 0 else None)
        n_steps = len(trace.steps)
        assert meta["n_edges"] == (n_steps if reduce else (n_steps + 1) * n_steps // 2)
        arcs = np.asarray(trace_named(fig, "into this step").x, dtype=float)
        n_into = int(np.isnan(arcs).sum())  # one NaN closes every arc
        assert n_into == (0 if step < 0 else 1 if reduce else step + 1)
        if step >= 0:
            assert trace_named(fig, "this step").x == (step + 1,)
            assert f"log p = {trace.steps[step].logprob:.2f}" in trace_named(fig, "this step").hovertext[0]


# --------------------------------------------------------------------------------------------------
# the attention masks


@pytest.mark.parametrize("mode", ["plan", "official_dynamic", "diffusion", "one_step_parallel"])
def test_mask_figure_shows_the_two_stream_masks(traces, mode):
    trace = traces[mode]
    labels = labels_for(trace)
    for step in (-1, 0, len(trace.steps) - 1):
        groups = torch.tensor(trace.group_ids_at(step))
        content, query = two_stream_masks(groups)
        fig = figures.mask_figure(trace, step, labels)
        assert np.array_equal(trace_named(fig, "content").z, content.numpy())
        assert np.array_equal(trace_named(fig, "query").z, query.numpy())
        assert trace_named(fig, "content").z.dtype == np.uint8
        current = trace.steps[step].positions if step >= 0 else []
        assert fig.layout.meta["highlight_rows"] == list(current)
        assert len(fig.layout.shapes) % 2 == 0 and (len(fig.layout.shapes) > 0) == bool(current)

        order = group_order(groups)
        sorted_fig = figures.mask_figure(trace, step, labels, sort_by_group=True)
        assert sorted_fig.layout.meta["order"] == order.tolist()
        for name, mask in (("content", content), ("query", query)):
            z = trace_named(sorted_fig, name).z
            assert np.array_equal(z, mask[order][:, order].numpy())
            shown = groups[order].numpy()
            assert (np.diff(shown) >= 0).all()
            later = shown[None, :] > shown[:, None]  # the cells right of each row's diagonal block
            assert not z[later].any(), "sorted by group, both masks are block-lower-triangular"


@pytest.mark.parametrize("mode", ["plan", "official_dynamic", "ar_baseline"])
@pytest.mark.parametrize("sort_by_group", [False, True])
def test_no_mask_tick_names_a_token_before_its_step(traces, mode, sort_by_group):
    """At every step, an open position's tick reads "p:?"; a decided or given one names its token."""
    trace = traces[mode]
    labels = labels_for(trace)
    decided, given = trace.decided_step(), trace.given
    for step in every_step(trace):
        fig = figures.mask_figure(trace, step, labels, sort_by_group=sort_by_group)
        order = fig.layout.meta["order"]
        for name in ("content", "query"):
            for axis in ("x", "y"):
                ticks = list(getattr(trace_named(fig, name), axis))
                want = [f"{p}:{labels[p]}" if given[p] or 0 <= decided[p] <= step else f"{p}:?" for p in order]
                assert ticks == want, (mode, step, name, axis)


def test_mask_ticks_of_split_characters_wait_for_every_byte():
    labels = ["⟨s⟩", "a", " <0xF0><0x9F>", "<0xA7>", "<0xA9>", "b"]
    everything = [True] * 6
    assert figures.mask_ticks(list(range(6)), labels, everything)[2:5] == ["2:🧩", "3:🧩", "4:🧩"]
    partly = [True, True, True, False, True, False]
    assert figures.mask_ticks(list(range(6)), labels, partly) == ["0:⟨s⟩", "1:a", "2:…", "3:?", "4:…", "5:?"]
    assert figures.mask_ticks(list(range(6)), labels)[2] == "2:🧩"  # without `known`: every token as it ends


@pytest.mark.parametrize("token, shown", [("\n", "↵"), ("\n\n", "↵↵"), ("\r\n", "↵"), ("\r", "↵"), (" ", "·"),
                                          ("   ", "···"), ("\t", "⇥"), ("\n  ", "↵··"), (" cat", " cat"),
                                          ("cat\n", "cat↵")])
def test_whitespace_tokens_are_visible(token, shown):
    assert figures.display_label(token) == shown and figures.short_label(token) == shown.strip()


def test_a_fill_of_line_breaks_and_spaces_shows_marks_in_the_grid(traces):
    trace = traces["plan"]
    labels = ["\n" if i % 3 == 0 else " " if i % 3 == 1 else "\n\n" for i in range(trace.plan.length)]
    last = len(trace.steps) - 1
    text = list(trace_named(figures.grid_figure(trace, last, labels), "cells").text)
    assert set(text) == {"↵", "·", "↵↵"}  # no blank cell


def test_mask_hover_carries_the_row_and_column_groups(traces):
    trace = traces["plan"]
    groups = np.array(trace.group_ids)
    custom = np.asarray(trace_named(figures.mask_figure(trace, 0, labels_for(trace)), "query").customdata)
    assert custom.shape == (LENGTH, LENGTH, 2)
    np.testing.assert_array_equal(custom[:, :, 0], np.repeat(groups[:, None], LENGTH, 1))
    np.testing.assert_array_equal(custom[:, :, 1], np.repeat(groups[None, :], LENGTH, 0))


# --------------------------------------------------------------------------------------------------
# log-probabilities, candidates, summary


def test_logprob_bars_are_the_step_logprobs(traces):
    trace = traces["dynamic"]
    for step in every_step(trace):
        fig = figures.logprob_figure(trace, step)
        bars = fig.data[0]
        np.testing.assert_allclose(bars.y, [s.logprob for s in trace.steps])
        faded = np.asarray(bars.marker.opacity) < 1
        assert np.flatnonzero(faded).tolist() == list(range(step + 1, len(trace.steps)))
        assert fig.layout.meta == {"figure": "logprob", "step": step}


@pytest.mark.parametrize("mode", ["plan", "diffusion", "one_step_parallel", "ar_baseline"])
def test_candidate_rows_cover_the_scored_positions_committed_first(traces, mode):
    trace = traces[mode]
    labels = labels_for(trace)
    headers, rows = figures.candidate_rows(trace, -1, labels, str)
    assert rows == [] and headers[0] == "position"
    for step, record in enumerate(trace.steps):
        headers, rows = figures.candidate_rows(trace, step, labels, lambda t: f"t{t}\n", top=3)
        assert sorted(r[0] for r in rows) == sorted(record.candidates)
        n_now = len(record.positions)
        assert {r[0] for r in rows[:n_now]} == set(record.positions)
        assert all(r[1] == "committed now" and r[2] == labels[r[0]] for r in rows[:n_now])
        assert all(r[1] == "open" and r[2] == "" for r in rows[n_now:])
        assert [r[5] for r in rows[n_now:]] == sorted((r[5] for r in rows[n_now:]), reverse=True)
        assert all("\n" not in r[3] and r[3].count(" · ") <= 2 for r in rows)


def test_step_summary(traces):
    trace = traces["plan"]
    n_given = sum(trace.given)
    assert figures.step_summary(trace, -1) == f"Before decoding: {n_given} given, {LENGTH - n_given} open"
    last = trace.steps[-1]
    line = figures.step_summary(trace, len(trace.steps) - 1)
    where = (f"at position {last.positions[0]}" if len(last.positions) == 1
             else "at positions " + ", ".join(map(str, last.positions)))  # where, not how many
    assert line.startswith(f"Step {len(trace.steps)}/{len(trace.steps)} · group {last.group} · {where} · ")
    assert "committed positions" not in line
    assert f"log p = {last.logprob:.2f}" in line and f"model calls {last.model_calls}" in line
    assert line.endswith(f" · {last.elapsed_s:.3f} s since decoding began")  # in the details panel; not in the views
    assert figures.step_summary(trace, len(trace.steps) - 1, timing=False) == line.rsplit(" · ", 1)[0]
    with pytest.raises(ValueError, match="step must lie"):
        figures.step_summary(trace, len(trace.steps))
    one = next(t for t, s in enumerate(traces["ar_baseline"].steps) if len(s.positions) == 1)
    position = traces["ar_baseline"].steps[one].positions[0]
    assert f" · at position {position} · " in figures.step_summary(traces["ar_baseline"], one)


def test_every_figure_numbers_the_steps_from_1_as_the_stage_does(traces):
    """The DAG's nodes, the log p axis and its hovers, the grid's colour bar and hovers: step t of the
    trace (0-based) is "step t + 1" everywhere, as the stage's counter, DAG and narration say it."""
    trace = traces["plan"]
    n, labels = len(trace.steps), labels_for(trace)
    decided = trace.decided_step()
    for step in (0, n // 2, n - 1):
        dag = figures.dag_figure(trace, step, labels)
        assert list(trace_named(dag, "steps").text) == [str(t + 1) for t in range(n)]
        assert trace_named(dag, "this step").hovertext[0].startswith(f"step {step + 1} · group ")
        logprob = figures.logprob_figure(trace, step)
        assert list(logprob.data[0].x) == list(range(1, n + 1))
        assert list(logprob.layout.xaxis.tickvals) == figures.step_ticks(n) and figures.step_ticks(n)[0] == 1
        assert [h.split(" · ")[0] for h in logprob.data[0].hovertext] == [f"step {t + 1}" for t in range(n)]
        assert list(logprob.data[1].x) == list(range(1, step + 2))  # the cumulative line, up to this step
        grid = figures.grid_figure(trace, step, labels)
        bar = trace_named(grid, "decided").colorbar
        assert [int(t) for t in bar.ticktext] == [v + 1 for v in bar.tickvals] == figures.step_ticks(n)
        hovers = trace_named(grid, "cells").hovertext
        for p, d in enumerate(decided):
            if 0 <= d <= step:
                assert f"<br>decided at step {d + 1}<br>" in hovers[p], hovers[p]
            elif d > step:
                assert f"<br>open (decided at step {d + 1})<br>" in hovers[p], hovers[p]
    assert figures.step_ticks(14) == [1, 2, 4, 6, 8, 10, 12, 14] and figures.step_ticks(5) == [1, 2, 3, 4, 5]
    assert figures.step_ticks(64) == [1, 10, 20, 30, 40, 50, 60] and figures.step_ticks(0) == []


def test_bytes_that_make_no_character_read_as_their_values():
    """A model can choose a byte token whose character it never completes ("ï¼", bytes EF BC, the start of
    a full-width character): every label shows its bytes, "‹EF BC›", never "�"; a split character that is
    completed, and whole non-ASCII text, read as they always did."""
    labels = ["⟨s⟩", "Café", " 😀", "<0xEF><0xBC>", "<0xEF><0xBC>", " <0xF0><0x9F>", "<0xA7>", "<0xA9>",
              "x<0xE2>", " y", "<0xBC>", " \ufffd", " Zürich"]
    whole, runs = figures.character_labels(labels)
    assert whole == ["⟨s⟩", "Café", " 😀", "‹EF BC›", "‹EF BC›", " 🧩", " 🧩", " 🧩", "x‹E2›", " y", "‹BC›",
                     " \ufffd", " Zürich"]  # a "�" the text itself holds stays
    assert runs == [(5, 8)]
    assert [figures.makes_no_character(t) for t in whole] == [False] * 3 + [True] * 2 + [False] * 3 + [True] \
        + [False] + [True] + [False] * 2
    assert figures.character_labels(["x<0xE2>", "<0xBC>"])[0] == ["x‹E2 BC›"] * 2  # still no character: one run
    assert figures.bytes_label(bytes([0xF0, 0x9F, 0x98])) == "‹F0 9F 98›"
    assert figures.short_label(" ‹EF BC›") == "‹EFBC›" and figures.short_label("‹F0 9F 98›") == "‹F09F98›"  # a cell
    # the tokens of one character never completed: one label across their cells
    assert figures.character_labels(["a", "<0xF0><0x9F>", "<0x98>", " b"]) == (
        ["a", "‹F0 9F 98›", "‹F0 9F 98›", " b"], [(1, 3)])
    ticks = figures.mask_ticks(list(range(len(labels))), labels)
    assert ticks[3] == "3:‹EFBC›" and not any("\ufffd" in t for t in ticks[:11])


# --------------------------------------------------------------------------------------------------
# every figure, every mode, and the size the app draws


def custom_trace():
    """A custom plan whose groups are out of position order (group 5 comes after groups 3 and 4)."""
    from model.loading import tiny_model

    ids = torch.arange(12) % 101
    groups = torch.tensor([0, 1, 2, 5, 5, 3, 4, 4, 6, 7, 8, 9])
    plan = custom_plan(ids, given=torch.tensor([True] * 3 + [False] * 9), group_ids=groups)
    return collect(run_decoder("plan", tiny_model(101, seed=0), plan))


@pytest.mark.parametrize("mode", MODES)
def test_every_figure_builds_at_every_step(traces, mode):
    trace = traces[mode]
    labels = labels_for(trace)
    for step in every_step(trace):
        for fig in (figures.grid_figure(trace, step, labels), figures.dag_figure(trace, step, labels),
                    figures.mask_figure(trace, step, labels, sort_by_group=True), figures.logprob_figure(trace, step)):
            assert fig.layout.meta["step"] == step and fig.layout.height and fig.layout.uirevision
        assert figures.step_summary(trace, step)


def test_figures_for_a_128_position_trace(tiny):
    trace = decode(tiny, "plan", length=128, group_size=2)
    labels = labels_for(trace)
    step = len(trace.steps) // 2
    builders = {"grid": lambda: figures.grid_figure(trace, step, labels),
                "dag": lambda: figures.dag_figure(trace, step, labels),
                "dag reduced": lambda: figures.dag_figure(trace, step, labels, reduce=True),
                "masks": lambda: figures.mask_figure(trace, step, labels, sort_by_group=True),
                "logprob": lambda: figures.logprob_figure(trace, step),
                "candidates": lambda: figures.candidate_rows(trace, step, labels, str)}
    timings = []
    for name, build in builders.items():
        start = time.perf_counter()
        built = build()
        timings.append(f"{name} {1e3 * (time.perf_counter() - start):.1f} ms")
        if name != "candidates":
            assert len(built.to_json()) > 0
    print(f"\n128 positions, {len(trace.steps)} steps: " + ", ".join(timings))


def test_dag_hover_names_a_steps_tokens_five_then_and_n_more(tiny):
    """A step that decides 8 tokens at once names 5 of them, then "and 3 more" (app.narration.named)."""
    trace = decode(tiny, "one_step_parallel", k=8)
    labels = labels_for(trace)
    record = trace.steps[0]
    assert len(record.positions) == 8
    hover = trace_named(figures.dag_figure(trace, 0, labels), "this step").hovertext[0]
    names = [labels[p] for p in record.positions]
    assert f"tokens {', '.join(names[:5])} and 3 more<br>" in hover


def test_candidates_show_their_leading_and_trailing_spaces(traces):
    """" The" and "The" are different tokens: a table cell would show both as "The"."""
    assert [figures.visible_spaces(t) for t in (" The", "The", "The ", "  ", "a b", "")] == \
        ["␣The", "The", "The␣", "␣␣", "a b", ""]
    trace = traces["plan"]
    _, rows = figures.candidate_rows(trace, 0, labels_for(trace), lambda t: " The" if t % 2 else "The")
    assert rows
    for row in rows:
        shown = [part.rsplit(" ", 1)[0] for part in row[3].split(" · ")]
        tokens = [t for t, _ in trace.steps[0].candidates[row[0]][:5]]
        assert shown == ["␣The" if t % 2 else "The" for t in tokens]


def test_the_committed_token_shows_its_space_as_its_candidates_do(traces):
    trace = traces["plan"]
    labels = [" w" if label else label for label in labels_for(trace)]
    _, rows = figures.candidate_rows(trace, 0, labels, str)
    committed = [row for row in rows if row[1] == "committed now"]
    assert committed and all(row[2] == "␣w" for row in committed)
