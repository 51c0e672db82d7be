"""Downloads are named after the trace they hold, and a trace names the no-repeat rule that chose it."""

import json
import re
from pathlib import Path

import pytest

from app.session import Explorer, Request
from app.ui.export_tab import ExportCallbacks, download_stem
from model.repeats import RULE

TEXT = "Once upon a time [MASK:3] lived in a house by the sea."


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


def test_a_download_is_named_after_the_texts_first_words_and_the_trace(explorer):
    ltr = explorer.decode(Request(text=TEXT, method="A3 plan", order="left to right"))
    again = explorer.decode(Request(text=TEXT, method="A3 plan", order="left to right"))
    other = explorer.decode(Request(text=TEXT, method="A3 plan", order="right to left"))
    stem = download_stem(ltr)
    assert re.fullmatch(r"a3-once-upon-a-[a-z0-9]+-[0-9a-f]{6}", stem), stem  # the 4th word may hold a fill
    assert download_stem(again) == stem  # the same trace, the same name
    assert download_stem(other) != stem  # another order, another file
    exports = ExportCallbacks(explorer)
    assert Path(exports.trace_json(ltr)).name == f"{stem}-trace.json"
    assert Path(exports.masks_csv(ltr, 2)).name == f"{stem}-masks-step3.zip"
    assert Path(exports.masks_npz(ltr, -1)).name == f"{stem}-masks-step0.npz"


def test_a_text_without_ascii_words_still_gets_a_plain_file_name(explorer):
    result = explorer.decode(Request(text="東京 大阪 京都 名古屋 [MASK:2] 神戸", method="A3 plan"))
    assert re.fullmatch(r"a3-text-[0-9a-f]{6}", download_stem(result))


@pytest.mark.parametrize("no_repeat", [3, 0])
def test_an_exported_trace_names_the_no_repeat_rule_it_ran_under(explorer, no_repeat):
    result = explorer.decode(Request(text=TEXT, method="A3 plan", no_repeat=no_repeat))
    data = json.loads(explorer.trace_json(result))
    assert data["config"]["sampler"].get("no_repeat", 0) == no_repeat
    assert data.get("no_repeat_rule") == (RULE if no_repeat else None)


def test_accented_letters_keep_their_base_letter_in_a_file_name(explorer):
    result = explorer.decode(Request(text="Café au lait and crème brûlée [MASK:2] in Zürich.", method="A3 plan"))
    assert re.fullmatch(r"a3-cafe-au-lait-and-[0-9a-f]{6}", download_stem(result)), download_stem(result)


def test_an_exported_best_of_n_trace_counts_the_calls_as_the_page_headline_does(explorer):
    """The trace on the stage is one candidate's (its own `model_calls`); the file also carries the run's
    count, the number the page's headline says, and every candidate with its score and calls."""
    from app.stage import calls_summary

    result = explorer.decode(Request(text=TEXT, method="A3 best of N"))
    data = json.loads(explorer.trace_json(result))
    found = result.best_of_n
    assert data["model_calls"] == result.trace.model_calls  # the kept candidate's own decode
    assert data["run_model_calls"] == result.model_calls == found.model_calls
    assert f"{data['run_model_calls']} model calls" in calls_summary(result)
    run = data["best_of_n"]
    assert run["decode_calls"] + run["scoring_calls"] == run["model_calls"] == data["run_model_calls"]
    assert [c["name"] for c in run["candidates"]] == [c.name for c in found.candidates]
    assert [c["kept"] for c in run["candidates"]].index(True) == found.best_index
    assert run["on_stage"] == found.best.name
    kept = run["candidates"][found.best_index]
    assert kept["open_tokens"] == [data["final_ids"][p] for p in result.trace.plan.open_positions]
    assert max(c["logp"] for c in run["candidates"]) == kept["logp"]
    plain = json.loads(explorer.trace_json(explorer.decode(Request(text=TEXT, method="A3 plan"))))
    assert plain["run_model_calls"] == plain["model_calls"] and "best_of_n" not in plain
