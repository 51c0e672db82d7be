"""What the page says in words that tests without a browser can read: the line under the method list (what
each method does, which settings it reads, as model.config's specs say and the settings' labels name them),
fills shown in Markdown, and the examples' labels."""

import re

from app.session import BEST_OF_N, BEST_OF_N_ABOUT, PAGE_METHODS
from app.ui.text_tab import METHOD_ABOUT
from model.config import METHODS


def test_every_method_says_what_it_does_and_which_settings_it_reads():
    assert set(METHOD_ABOUT) == set(PAGE_METHODS)
    for spec in METHODS.values():
        about = METHOD_ABOUT[spec.label]
        assert about.startswith(spec.description)
        assert ("Order, Group size" in about) == spec.order
        assert ("Commit by" in about) == spec.strategy
        assert (" k and " in about) == spec.k
        assert about.endswith("Sampling.")
    assert "Order, Group size and Sampling" in METHOD_ABOUT["A3 plan"]
    assert "Commit by, k and Sampling" in METHOD_ABOUT["A3 dynamic"]
    assert METHOD_ABOUT["AR baseline"].endswith("Settings it reads: Sampling.")
    assert METHOD_ABOUT[BEST_OF_N].startswith(BEST_OF_N_ABOUT) and "reads only No stutter" in METHOD_ABOUT[BEST_OF_N]


def test_the_settings_labels_name_the_methods_that_read_them():
    """The settings' labels say which methods read them, as the line under the list does."""
    import inspect

    from app.ui import text_tab

    source = inspect.getsource(text_tab.build_text_tab)
    readers = {"Commit by": [s.label for s in METHODS.values() if s.strategy and s.compared],
               "Tokens per step k": [s.label for s in METHODS.values() if s.k and s.compared]}
    assert 'label="Commit by (dynamic, diffusion)"' in source and readers["Commit by"] == ["A3 dynamic", "diffusion"]
    assert "Tokens per step k (dynamic, diffusion, one-step)" in source
    assert readers["Tokens per step k"] == ["A3 dynamic", "diffusion", "one-step parallel"]


def test_a_fill_shows_in_markdown_as_it_is_on_one_line():
    """Compare's texts and the best-of-N table: no Markdown read in a fill ("~~" strikes nothing), and a line
    break marked as the stage marks it, never a space joining the fill to the text after it."""
    from app.session import markdown_text

    shown = markdown_text("It was morning.\nThe ~~sea~~ *was* calm.")
    assert shown == "It was morning.↵The \\~\\~sea\\~\\~ \\*was\\* calm."
    assert markdown_text("a\tb | <i>") == "a⇥b \\| \\<i\\>"


def test_each_example_says_what_it_shows():
    """The examples read as labels (what each shows), so each label names the settings its click sets."""
    from app.ui.text_tab import EXAMPLE_LABELS, EXAMPLES

    assert len(EXAMPLE_LABELS) == len(EXAMPLES) == len(set(EXAMPLE_LABELS))
    for (text, method, order, size, k, groups), label in zip(EXAMPLES, EXAMPLE_LABELS, strict=True):
        assert method in label and len(label) <= 60, label  # Gradio cuts a label after 60 characters
        if method == "A3 plan" and order != "left to right":
            assert order in label, label
        if groups:
            assert groups in label, label
        step = size if method == "A3 plan" else k if method in ("diffusion", "A3 dynamic") else 1
        assert (f"{step} tokens a step" in label) == (step > 1), label
        blanks = re.findall(r"\[MASK:(\d+)\]", text)
        if "[MASK:?]" in text:
            assert "[MASK:?]" in label, label
        elif len(blanks) == 1 and "-token blank" in label:
            assert f"{blanks[0]}-token blank" in label, label


def test_compare_names_the_methods_it_leaves_out():
    from app.session import COMPARE_METHODS
    from app.ui.compare_tab import COMPARED, LEFT_OUT

    left_out = [label for label in PAGE_METHODS if label not in COMPARE_METHODS]
    assert left_out == [spec.label for spec in METHODS.values() if not spec.compared]
    for label in left_out:
        assert f"**{label}**" in LEFT_OUT and LEFT_OUT in COMPARED
