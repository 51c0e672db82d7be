"""The token picker's chips as the text changes (tiny model, the real tokenizer): the masks clicked carry
over to an edit of the text and never to a text pasted over it; a text that is not valid leaves the chips
up marked out of date, an empty one clears them."""

from types import SimpleNamespace

import gradio as gr
import pytest

from app import order_lab
from app.picker import carry_mask, is_edit
from app.session import Explorer
from app.ui.text_tab import TextCallbacks

CAT = "The cat sat on the mat."


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


@pytest.fixture(scope="module")
def on(explorer):
    return TextCallbacks(SimpleNamespace(explorer=explorer))


def clicked(explorer, text: str, *tokens: str) -> dict:
    """The chips of `text` with the chips showing `tokens` clicked (masked)."""
    picker = explorer.picker_from_text(text)
    for token in tokens:
        picker["mask"][picker["tokens"].index(token)] = True
    return picker


def masked(picker: dict) -> list[str]:
    return [t for t, m in zip(picker["tokens"], picker["mask"], strict=True) if m]


@pytest.mark.parametrize("pasted", [
    "My neighbour [MASK:3] a big dog.",  # shares only the final "."
    "The weather was cold, and the roads were icy all week long.",  # shares only the leading "The"
    "The end.",  # a short text: shares its first and its last token
])
def test_a_text_pasted_over_the_old_one_keeps_none_of_its_clicks(explorer, pasted):
    old = clicked(explorer, CAT, "The", " cat", ".")
    new = explorer.picker_from_text(pasted)
    assert carry_mask(old, new) == new  # its own blanks only


@pytest.mark.parametrize("edited, kept", [
    ("The cat sat on the mats.", [" cat", "."]),  # a key typed inside a word
    ("The cat sat on the mat. Then it slept by the fire all afternoon long.", [" cat", "."]),  # typed on
    ("Yes. The cat sat on the mat.", [" cat", "."]),  # typed in front
    ("The cat.", [" cat", "."]),  # most of it deleted
    ("A cat sat on the mat.", [" cat", "."]),  # a word typed over
    ("The dog sat on the mat.", ["."]),  # the clicked word typed over: its click goes with it
])
def test_an_edit_of_the_text_keeps_the_clicks_outside_it(explorer, edited, kept):
    old = clicked(explorer, CAT, " cat", ".")
    assert masked(carry_mask(old, explorer.picker_from_text(edited))) == kept


def test_the_rule_carries_an_insertion_or_deletion_or_a_small_replacement_only():
    assert is_edit(7, 7, 6)  # one token typed over in seven
    assert is_edit(7, 30, 7) and is_edit(30, 7, 7)  # only added, only removed: every kept token is in place
    assert is_edit(10, 10, 5) and is_edit(10, 12, 6)  # half of both kept
    assert not is_edit(10, 12, 5)  # half of the old text, less than half of the new one
    assert not is_edit(7, 9, 1)  # "The cat sat on the mat." -> "My neighbour [MASK:3] a big dog.": one "." kept
    assert not is_edit(2, 9, 1)  # a short text too: more than its half replaced, and most of the new one new
    assert not is_edit(0, 5, 0) and not is_edit(5, 5, 0)  # nothing in common


def test_the_gallerys_masks_stay_off_a_text_pasted_after_them(explorer):
    """Order lab's "use it" masks the second half of its text, the final "." included; a text pasted over it
    (sharing the first sentence, even) starts with its own blanks, and an edit of it keeps the scheme's."""
    _, schemes = order_lab.gallery_for(explorer, order_lab.LAB_TEXT)
    scheme = next(s for s in schemes if s.name == "paper_figure_1")
    chips = order_lab.scheme_picker(explorer, order_lab.LAB_TEXT, scheme)
    assert chips["mask"][-1] and chips["tokens"][-1] == "."
    for pasted in ("The old dog slept by the fire. [MASK:8] The children laughed and gave him a treat.",
                   "Mia found an old key under the porch. [MASK:8] was a letter."):
        new = explorer.picker_from_text(pasted)
        assert carry_mask(chips, new) == new
    edited = explorer.picker_from_text(order_lab.LAB_TEXT.replace("little box", "little wooden box"))
    assert masked(carry_mask(chips, edited))[-3:] == [" her", " grandmother", "."]


def test_typing_then_pasting_over_the_text_keeps_only_the_new_blanks(explorer, on):
    """TextCallbacks.on_typed, as the text box's change event calls it."""
    picker, _, _ = on.on_typed(CAT, None, None)
    picker["mask"][picker["tokens"].index(" cat")] = picker["mask"][-1] = True  # two chips clicked
    typed, _, _ = on.on_typed(CAT.replace("mat", "mats"), picker, None)
    assert masked(typed) == [" cat", "."]
    pasted, _, _ = on.on_typed("My neighbour [MASK:3] a big dog.", typed, None)
    assert masked(pasted) == ["?"] * 3


@pytest.mark.parametrize("bad, why", [
    ("The cat [MASK:5000] sat.", "N must be between 1 and 255: the model takes at most 256 tokens"),
    ("The cat [MASK:3 sat.", "Malformed blank"),
    ("The cat [MASK:", "Malformed blank"),  # a blank half typed
])
def test_chips_of_a_text_that_is_not_valid_stay_marked_out_of_date(explorer, on, bad, why):
    picker = clicked(explorer, CAT, " cat")
    shown, _, warning = on.on_typed(bad, picker, None)
    assert why in shown["stale"]
    assert warning == gr.skip()  # an empty warning line stays empty while a blank is typed
    # a warning on show was about the text before the edit: this text's reason takes its place (no toast)
    _, _, warning = on.on_typed(bad, picker, None, "⚠️ Malformed blank '[MASK:0]': N must be between 1 and 255")
    assert warning.startswith("⚠️ ") and why in warning and "[MASK:0]" not in warning
    assert {k: v for k, v in shown.items() if k != "stale"} == picker  # the same chips: no flicker
    # back to the text of the chips: the mark goes, the clicks stay
    back, _, _ = on.on_typed(CAT, shown, None)
    assert "stale" not in back and masked(back) == [" cat"]
    # the text made valid: new chips, carried from the last valid text's
    fixed, _, warning = on.on_typed("The cat [MASK:3] sat on the mat.", shown, None)
    assert "stale" not in fixed and masked(fixed) == [" cat", "?", "?", "?"]
    assert warning == ""  # a valid text again: the warning about the last one goes


@pytest.mark.parametrize("empty", ["", "   \n"])
def test_an_empty_text_clears_the_chips(explorer, on, empty):
    shown, _, warning = on.on_typed(empty, clicked(explorer, CAT, " cat"), None)
    assert shown["tokens"] == [] and shown["mask"] == [] and "stale" not in shown
    assert warning == ""  # a warning about the text that was there goes with it


def test_a_text_not_valid_before_any_chips_says_so(on):
    shown, _, _ = on.on_typed("[MASK:0]", None, None)
    assert shown["tokens"] == [] and "Malformed blank" in shown["stale"]


def test_the_best_of_n_cost_line_follows_the_chips_and_hides_for_a_text_that_is_not_valid(explorer, on):
    from app.session import BEST_OF_N
    from model.rerank import CANDIDATES

    picker = clicked(explorer, CAT, " cat")
    with_click, without = on.on_cost(BEST_OF_N, CAT, picker), on.on_cost(BEST_OF_N, CAT, None)
    assert with_click.visible and f"decodes the blank token {len(CANDIDATES)} ways" in with_click.value
    assert without.visible is False  # no blank in the text, none clicked: nothing to cost
    assert on.on_cost(BEST_OF_N, "The cat [MASK:0] sat.", picker).visible is False  # said under the chips instead
    assert on.on_cost("A3 plan", CAT, picker).visible is False


def test_a_run_puts_its_chips_on_the_picker_only_if_the_text_is_still_the_one_it_read(explorer, on):
    """TextCallbacks.on_ran, after Run answers with the chips of the text it read (its masks as decoded). The
    text unchanged: those chips onto the picker. Edited while the run decoded: the picker keeps the chips it
    has (the new text's, with any clicks), and the run's lengths and best-of-N tables hide, as after an edit.
    A failed run (no chips) changes nothing. Each time the state is emptied."""
    ran = clicked(explorer, CAT, " cat")
    assert on.on_ran(CAT, ran) == (gr.skip(), gr.skip(), ran, None)
    lengths_box, best_box, chips, state = on.on_ran(CAT.replace("mat", "mats"), ran)
    assert not lengths_box.visible and not best_box.visible and chips == gr.skip() and state is None
    assert on.on_ran(CAT, None) == (gr.skip(),) * 3 + (None,)

