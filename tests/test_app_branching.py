"""Branching as the page does it (app.branching over model.branching), on the tiny model."""

import dataclasses
import json

import pytest

from app import branching
from app.figures import candidate_rows
from app.session import Explorer, InputError, Request

TEXT = "The cat sat on the mat and [MASK:5] at the birds."


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


def test_branch_with_another_candidate_keeps_the_prefix_and_grows_the_tree(explorer):
    result = explorer.decode(Request(text=TEXT))
    step = 2
    positions = branching.open_positions(result, step)
    decided = result.trace.steps[step].positions[0]
    assert positions[0][1] == decided and "decided here" in positions[0][0]
    # it names the word decided there, as the stage shows it, never a token id ("#1838", a browser walk)
    word = result.labels[decided].strip() or "␣"
    assert positions[0][0] == f"position {decided} (decided here: {word})" and "#" not in positions[0][0]
    # a sampled token outside the step's top candidates is not in the run's vocab: still its word
    unnamed = dataclasses.replace(result, vocab={})
    assert branching.open_positions(unnamed, step)[0][0] == positions[0][0]
    assert {p for _, p in positions} == set(result.trace.steps[step].candidates)
    tokens = branching.token_choices(result, step, decided)
    assert [t for _, t in tokens] == [t for t, _ in result.trace.steps[step].candidates[decided]]
    _, table = candidate_rows(result.trace, step, result.labels, result.token_text, top=len(tokens))
    row = next(r for r in table if r[0] == decided)  # the step's candidates table, the same position
    for (label, t), (_, p), in_table in zip(tokens, result.trace.steps[step].candidates[decided],
                                            row[3].split(" · "), strict=True):
        assert label == f"“{in_table.rsplit(' ', 1)[0]}” (p = {p:.3f})", (label, in_table)  # as the table writes it
        assert result.token_text(t).startswith(" ") == label.startswith("“␣"), label  # a leading space shows
    other = tokens[1][1]
    tree, shown, _ = branching.branch(explorer, None, result, step, position=decided, token=other)
    assert len(tree) == 2 and shown.trace is tree[1].trace
    assert shown.trace.final_ids[decided] == other
    assert [s.tokens for s in shown.trace.steps[:step]] == [s.tokens for s in result.trace.steps[:step]]
    # the shared prefix is not decoded again: one call rebuilds its content (the page keeps no cache)
    assert tree[1].new_model_calls == result.n_steps - step + 1

    # branching the branch (now on the stage) adds a child of branch 1, not of the root
    tree, again, _ = branching.branch(explorer, tree, shown, 3, order="right to left", group_size=2)
    assert len(tree) == 3 and tree[2].parent == 1 and tree.children(1) == [2]
    rows = branching.tree_rows(explorer, tree, again)
    assert [r[0] for r in rows] == ["0", "1", "▶ 2"] and rows[2][2] == 1 and rows[2][3] == 3
    assert rows[1][6] == shown.text

    # a fresh run is not part of the tree: branching it starts a new tree
    fresh = explorer.decode(Request(text=TEXT, seed=1))
    new_tree, _, _ = branching.branch(explorer, tree, fresh, 0, order="outside-in")
    assert new_tree is not tree and len(new_tree) == 2


def test_dynamic_runs_continue_with_a_strategy(explorer):
    result = explorer.decode(Request(text=TEXT, method="A3 dynamic", k=1))
    choices, label = branching.continuation_choices(result)
    assert choices == ["confidence", "entropy", "random"] and "dynamic" in label
    tree, shown, _ = branching.branch(explorer, None, result, 1, order="entropy", group_size=2)
    assert shown.trace.mode == "dynamic" and all(len(s.positions) <= 2 for s in shown.trace.steps[1:])


def test_what_cannot_branch_says_why(explorer):
    result = explorer.decode(Request(text=TEXT))
    for method in ("diffusion", "one-step parallel", "official dynamic"):
        other = explorer.decode(Request(text=TEXT, method=method))
        assert "cannot branch" in branching.can_branch(other)
        with pytest.raises(InputError, match="cannot branch"):
            branching.branch(explorer, None, other, 0, order="left to right")
    with pytest.raises(InputError, match="Stop the stage on a step"):
        branching.branch(explorer, None, result, -1, order="left to right")
    with pytest.raises(InputError, match="Unknown order"):
        branching.branch(explorer, None, result, 0, order="sideways")
    with pytest.raises(InputError, match="Cannot branch"):
        branching.branch(explorer, None, result, 0, position=0, token=5)  # the start token is given
    with pytest.raises(InputError, match="Run a decoding first"):
        branching.branch(explorer, None, None, 0, order="left to right")
    with pytest.raises(InputError, match="Pick a position and one of its candidates"):
        branching.branch(explorer, None, result, 0, position=5, token=None)
    assert branching.open_positions(result, -1) == [] and branching.token_choices(None, 0, 1) == []


def test_the_tree_is_capped(explorer, monkeypatch):
    monkeypatch.setattr(branching, "MAX_BRANCHES", 2)
    result = explorer.decode(Request(text=TEXT))
    tree, _, _ = branching.branch(explorer, None, result, 1, order="right to left")
    with pytest.raises(InputError, match="the most the page keeps"):
        branching.branch(explorer, tree, result, 2, order="outside-in")


# ------------------------------------------------------------------------------ landing and twins
def dynamic_run(explorer):
    return explorer.decode(Request(text=TEXT, method="A3 dynamic", k=1))


def test_decoding_the_rest_on_a_branchs_own_pick_keeps_the_pick(explorer):
    """On the step where a token branch committed its pick, "decode the rest" decodes what follows the
    pick (a child of the branch), not the step again: that would throw the pick away and reproduce the
    parent's run."""
    result = dynamic_run(explorer)
    step = 2
    decided = result.trace.steps[step].positions[0]
    pick = branching.token_choices(result, step, decided)[1][1]
    tree, shown, note = branching.branch(explorer, None, result, step, position=decided, token=pick)
    assert branching.branch_index(tree, shown) == 1 and branching.landing_step(tree, 1) == step
    assert "reproduces" not in note
    # the default way to decode the rest is not the run's own: that would only reproduce it
    assert result.trace.config.strategy == "confidence" and branching.other_continuation(shown) == "entropy"
    tree, rest, note = branching.branch(explorer, tree, shown, step, order="entropy", group_size=1)
    assert tree[2].parent == 1 and tree[2].at_step == step + 1 and "Kept this branch's pick" in note
    assert rest.trace.final_ids[decided] == pick and f"from step {step + 2}" in tree[2].name
    assert [s.tokens for s in rest.trace.steps[:step + 1]] == [s.tokens for s in shown.trace.steps[:step + 1]]
    assert branching.landing_step(tree, 2) == step + 1
    # off the pick step, the rest is decoded from the step itself, as for any run
    tree, _, note = branching.branch(explorer, tree, shown, step + 1, order="random")
    assert tree[3].at_step == step + 1 and "Kept" not in note
    # a pick on the last step leaves nothing to decode after it
    last = result.n_steps - 1
    tree, at_end, _ = branching.branch(explorer, tree, result, last, position=result.trace.steps[last].positions[0],
                                       token=branching.token_choices(result, last,
                                                                     result.trace.steps[last].positions[0])[1][1])
    with pytest.raises(InputError, match="nothing is left to decode after it"):
        branching.branch(explorer, tree, at_end, last, order="entropy")


def test_a_branch_that_reproduces_a_run_says_so(explorer):
    result = dynamic_run(explorer)
    tree, same, note = branching.branch(explorer, None, result, 1, order="confidence", group_size=1)
    assert same.trace.final_ids == result.trace.final_ids
    assert "Branch 1 reproduces run 0 (main run) exactly, step by step" in note
    assert tree[1].name.endswith("(= run 0)") and branching.twin(tree, 1) == (0, True)
    assert branching.tree_rows(explorer, tree, same)[1][1].endswith("(= run 0)")
    position = result.trace.steps[1].positions[0]
    kept = result.trace.final_ids[position]  # (with the no-repeat rule the run may have kept the runner-up)
    other_token = next(t for _, t in branching.token_choices(result, 1, position) if t != kept)
    tree, other, note = branching.branch(explorer, tree, result, 1, position=position, token=other_token)
    assert branching.twin(tree, 2) is None and "reproduces" not in note


def test_the_rest_of_an_ends_first_run_is_not_offered_as_left_to_right(explorer):
    """Past its ends an ends-first run goes on left to right: the default continuation is neither."""
    result = explorer.decode(Request(text=TEXT, method="A3 plan", order="ends first"))
    assert result.trace.config.order == "ends_first"
    assert branching.other_continuation(result) not in ("ends first", "left to right")
    tree, same, note = branching.branch(explorer, None, result, 2, order="left to right", group_size=1)
    assert "reproduces run 0" in note  # what the default avoids: the same tokens again


def test_the_stage_lands_a_branch_paused_on_its_step_with_a_headline_that_names_it(explorer):
    from app.stage import stage_payload
    from app.ui.details_tab import run_name, shown_at

    result = dynamic_run(explorer)
    step = 2
    decided = result.trace.steps[step].positions[0]
    tree, shown, _ = branching.branch(explorer, None, result, step, position=decided,
                                      token=branching.token_choices(result, step, decided)[1][1])
    headline = branching.branch_headline(tree, 1, shown.method)
    assert headline == (f"branch 1 of A3 dynamic, from step 3: {tree[1].new_model_calls} new model calls · "
                        "steps 1-2 shared with the main run · No\u00a0stutter: on")  # the rule the branch decoded with
    assert tree[1].trace.config.sampler.no_repeat == result.trace.config.sampler.no_repeat == 3
    payload, at = shown_at(tree, shown, step)
    assert at == step and payload["start"] == step and payload["autoplay"] is False
    assert payload["headline"] == headline and "new model calls" in payload["terms"]
    assert payload["terms"]["Step"]  # the view's own words keep their meanings
    assert run_name(tree, shown) == "branch 1 of A3 dynamic" and run_name(tree, result) == "A3 dynamic"
    # the main run put back: paused on the step the details showed, its own headline
    root = branching.branch_result(explorer, tree, 0, shown.method)
    payload, at = shown_at(tree, root, 4)
    assert at == 4 and payload["start"] == 4 and not payload["autoplay"] and payload["headline"].startswith("A3 dyn")
    # a stage opened before the first step plays as before and sends no start
    assert "start" not in stage_payload(result) and stage_payload(result)["autoplay"]
    assert stage_payload(result, start=99)["start"] == result.n_steps - 1


def test_the_details_callbacks_follow_a_branch_at_once(explorer):
    """on_branch puts the branch on the stage paused on its step and sets the details' step to it;
    on_details then names the branch; opening the tab details the step the stage shows."""
    from app.ui.details_tab import DetailsCallbacks
    from app.ui.model_calls import model_calls

    on = DetailsCallbacks(model_calls(explorer))
    result = dynamic_run(explorer)
    step = 2
    decided = result.trace.steps[step].positions[0]
    token = branching.token_choices(result, step, decided)[1][1]
    tree, shown, stage, _, _, _, note, at, *_ = on.on_branch_token(None, result, step, decided, token)
    assert shown.trace is tree[1].trace and at == step and stage["start"] == step and not stage["autoplay"]
    summary = on.on_details(shown, at, False, False, tree)[0]
    assert summary.startswith("**branch 1 of A3 dynamic** · Step 3/")
    tree, rest, stage, *_, at, _, _, _ = on.on_branch_order(tree, shown, at, "entropy", 1)
    assert tree[2].parent == 1 and at == step + 1 == stage["start"]
    assert on.on_opened(rest, None, False, False, tree)[0] == {"__type__": "update"}  # no step read: gr.skip()
    assert on.on_opened(rest, 0, False, False, tree)[0].startswith("**branch 2 of A3 dynamic** · Step 1/")


def test_the_token_offered_first_is_never_the_one_the_step_committed(explorer):
    result = dynamic_run(explorer)
    step = 2
    decided = result.trace.steps[step].positions[0]
    tokens = branching.token_choices(result, step, decided)
    committed = result.trace.steps[step].tokens[0]
    assert branching.default_token(result, step, decided, tokens) == next(t for _, t in tokens if t != committed)
    tree, shown, _ = branching.branch(explorer, None, result, step, position=decided, token=tokens[1][1])
    again = branching.token_choices(shown, step, decided)  # the branch's step: its pick is committed now
    assert branching.default_token(shown, step, decided, again) != tokens[1][1]
    open_here = next(p for _, p in branching.open_positions(result, step) if p != decided)
    others = branching.token_choices(result, step, open_here)
    assert branching.default_token(result, step, open_here, others) == others[0][1]
    assert branching.default_token(result, step, decided, []) is None


def test_a_picked_token_is_narrated_as_the_users_not_the_models(explorer):
    """After "Branch with this token", the stage said "the model decides “his”" of the token the user picked."""
    from app.trace_view import view_of_result

    result = explorer.decode(Request(text=TEXT))
    step = 2
    decided = result.trace.steps[step].positions[0]
    other = branching.token_choices(result, step, decided)[1][1]
    tree, shown, _ = branching.branch(explorer, None, result, step, position=decided, token=other)
    assert shown.trace.settings["picked"] == [{"step": step, "positions": [decided]}]
    view = view_of_result(shown)
    said, brief = view.steps[step].narration, view.steps[step].brief
    word = shown.labels[decided]
    p = float(result.trace.steps[step].candidates[decided][1][1])
    for sentence in (said, brief):
        assert sentence.startswith(f"Step {step + 1}: you picked ") and "the model decides" not in sentence
        assert "(the model gave it p " in sentence
    assert word.strip() in said and (f"p = {p:.2f}" in said or "p < 0.001" in said or f"p = {p:.3f}" in said)
    # the steps before and after are the model's own
    assert "the model decides" in view.steps[step + 1].narration and "you picked" not in view.steps[step - 1].narration
    # the exported trace keeps the mark
    assert json.loads(shown.trace.to_json())["settings"]["picked"] == [{"step": step, "positions": [decided]}]
    # a branch of that branch, later on, keeps the pick in the prefix it shares, and adds its own
    later = step + 2
    tree, again, _ = branching.branch(explorer, tree, shown, later, order="right to left")  # nothing picked
    assert again.trace.settings["picked"] == [{"step": step, "positions": [decided]}]
    assert view_of_result(again).steps[step].narration.startswith(f"Step {step + 1}: you picked ")
    position = again.trace.steps[later].positions[0]
    token = branching.token_choices(again, later, position)[1][1]
    tree, third, _ = branching.branch(explorer, tree, again, later, position=position, token=token)
    assert third.trace.settings["picked"] == [{"step": step, "positions": [decided]},
                                              {"step": later, "positions": [position]}]
    # a pick before the first one: that one is not in the prefix it shares
    first = third.trace.steps[step - 1].positions[0]
    token = branching.token_choices(third, step - 1, first)[1][1]
    tree, early, _ = branching.branch(explorer, tree, third, step - 1, position=first, token=token)
    assert early.trace.settings["picked"] == [{"step": step - 1, "positions": [first]}]


def test_the_branch_table_marks_a_line_break_as_the_stage_does(explorer):
    """A table cell shows a line break as a space; the row reads "↵" where the text breaks, as the stage does."""
    result = explorer.decode(Request(text="Tom was tired.\nHe [MASK:4] to bed early."))
    tree, shown, _ = branching.branch(explorer, None, result, 1, order="right to left")
    rows = branching.tree_rows(explorer, tree, shown)
    assert len(rows) == 2 and all(r[6].startswith("Tom was tired.↵He") and "\n" not in r[6] for r in rows), rows
