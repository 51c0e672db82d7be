"""The general-text corpus: extraction from its sources, and the shipped splits."""

import pytest

from model.data.general import (
    SOURCES,
    interleave_sources,
    jargon_paragraphs,
    middle_span,
    read_general,
    rst_paragraphs,
    sentence_for_infill,
    split_of,
    wordnet_examples,
)


def test_wordnet_examples_are_cleaned_sentences():
    line = ('02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 023 @ 02083346 n 0000 | a member of the '
            'genus Canis; "the dog barked all night long at the moon" ; "a dog"')
    assert wordnet_examples(line) == ["The dog barked all night long at the moon."]  # "a dog" is too short
    assert wordnet_examples("no gloss here") == []


def test_rst_paragraphs_keep_prose_and_drop_markup():
    text = ("Title\n=====\n\nThe :keyword:`for` statement in Python differs a bit from what you may be used "
            "to in ``C`` or Pascal, as the :ref:`tutorial <tut-for>` says.\n\n.. note::\n\n   A note.\n\n"
            "For example::\n\n   >>> x = 1\n\n* a list item that is long enough to count as a paragraph here.\n")
    assert rst_paragraphs(text) == ["The for statement in Python differs a bit from what you may be used to in C "
                                    "or Pascal, as the tutorial says."]


def test_jargon_paragraphs_keep_definitions_and_drop_headwords():
    text = ("acme\n /ak·mee/, n.\n\n    [from Greek akme highest point] The canonical supplier of bizarre, "
            "elaborate, and non-functional\n    gadgetry, where {Rube Goldberg} shops.\n\n    [73-10-31]\n")
    assert jargon_paragraphs(text) == ["The canonical supplier of bizarre, elaborate, and non-functional gadgetry, "
                                       "where Rube Goldberg shops."]


def test_split_is_a_function_of_the_text():
    assert split_of("a sentence") == split_of("a sentence")
    assert {split_of(f"sentence number {i}") for i in range(200)} == {"train", "validation", "test"}


@pytest.mark.parametrize("n", [3, 5, 10, 16, 40])
def test_middle_span_is_inside_with_context_on_both_sides(n):
    lo, hi = middle_span(n)
    assert 1 <= lo < hi <= n - 1
    assert abs(lo - (n - hi)) <= 1  # centred


def test_shipped_splits_load_are_disjoint_and_cover_every_source():
    splits = {s: read_general(s) for s in ("train", "validation", "test")}
    texts = {s: {r["text"].lower() for r in records} for s, records in splits.items()}
    assert not texts["test"] & texts["train"] and not texts["validation"] & texts["train"]
    assert not texts["test"] & texts["validation"]
    for records in splits.values():
        assert {r["source"] for r in records} == set(SOURCES)
        assert all(split_of(r["text"]) == s for s, rs in splits.items() for r in rs[:50])
    assert len(splits["test"]) > 1000 and len(splits["train"]) > 20000


def test_general_test_split_is_disjoint_from_the_stories_and_usable_for_infill():
    from model.data.stories import read_stories

    stories = " ".join(s["text"] for split in ("train", "validation") for s in read_stories(split))
    sample = interleave_sources(read_general("test"), 60)
    assert [r["source"] for r in sample[:3]] == list(SOURCES)
    assert not any(r["text"] in stories for r in sample)
    assert sum(sentence_for_infill(r["text"]) is not None for r in sample) >= 40


def test_held_out_documents_share_no_eight_words_with_train():
    """The shipped general corpus: no validation or test document repeats 8 words in a row of a training one."""
    from model.data.general import OVERLAP_WORDS, ngrams, read_general

    seen = set()
    for record in read_general("train"):
        seen |= ngrams(record["text"])
    for split in ("validation", "test"):
        leaks = [r["id"] for r in read_general(split) if ngrams(r["text"]) & seen]
        assert not leaks, f"{split}: {len(leaks)} documents share {OVERLAP_WORDS} words with train, e.g. {leaks[:3]}"


def test_drop_overlapping_drops_held_out_copies_and_keeps_train():
    from model.data.general import drop_overlapping

    shared = "the quick brown fox jumps over the lazy dog"
    splits = {"train": [{"id": "a", "source": "wordnet", "text": f"Once {shared} again."}],
              "validation": [{"id": "b", "source": "wordnet", "text": "Nothing in common with anything here at all."}],
              "test": [{"id": "c", "source": "wordnet", "text": f"{shared.upper()} twice"},
                       {"id": "d", "source": "wordnet", "text": "the quick brown fox jumps over a lazy dog"}]}
    assert drop_overlapping(splits) == {"validation": 0, "test": 1}
    assert [r["id"] for r in splits["test"]] == ["d"] and len(splits["train"]) == 1
