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
