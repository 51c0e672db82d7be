import gzip
import json
from collections import Counter

import pytest

from model.data.distill import clean_story, finalize, generate, prompt_grid, split_of
from model.data.stories import split_sentences


def count_words(text: str) -> int:
    return 2 * len(text.split())  # a stand-in for the tokenizer


def test_prompt_grid_is_seeded_and_unique():
    a, b, c = prompt_grid(0), prompt_grid(0), prompt_grid(1)
    assert [p.key for p in a] == [p.key for p in b] and [p.key for p in a] != [p.key for p in c]
    assert len({p.key for p in a}) == len(a) and len(a) > 50_000


def test_split_is_a_function_of_the_prompt_only():
    prompts = prompt_grid(0)
    splits = Counter(split_of(p.key) for p in prompts)
    assert 0.88 < splits["train"] / len(prompts) < 0.92
    assert 0.04 < splits["test"] / len(prompts) < 0.06 and 0.04 < splits["validation"] / len(prompts) < 0.06
    assert all(split_of(p.key) == split_of(p.key) for p in prompts[:100])


GOOD = ("Leo found a red kite in the park. It was stuck in a tall tree. He asked his father for help. "
        "Together they pulled it down with a long stick. Leo flew the kite until the sun went down.")


@pytest.mark.parametrize("raw, kept", [
    (GOOD, GOOD),
    (GOOD + " Then he", GOOD),  # a cut-off last sentence is dropped
    ("Sure! Here is a story:\n" + GOOD, None),  # chat boilerplate
    ("**The Kite**\n" + GOOD, None),
    ("Leo found a kite. It was red.", None),  # too few sentences
    ("Leo found a kite in the park. " * 4, None),  # repeated sentences
    ("Léo trouvé un cerf-volant très élevé. Il était coincé là-haut. Son père l'a aidé à le décrocher.", None),
])
def test_clean_story(raw, kept):
    assert clean_story(raw, count_words) == kept


def test_clean_story_enforces_token_bounds():
    assert clean_story(GOOD, lambda s: 20) is None and clean_story(GOOD, lambda s: 300) is None


def test_finalize_dedupes_splits_by_prompt_and_writes_a_card(tmp_path, tokenizer, monkeypatch):
    import model.base

    monkeypatch.setattr(model.base, "load_base_causal_lm", lambda: (None, tokenizer))
    prompts = prompt_grid(0)[:40]
    rows = [{"prompt_index": p.index, "prompt": p.key, "text": GOOD.replace("Leo", f"Kid{p.index}")} for p in prompts]
    rows.append(dict(rows[0]))  # an exact duplicate
    (tmp_path / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "progress.json").write_text(json.dumps({"next": 40, "kept": 41}))
    card = finalize(tmp_path, tmp_path / "out", seed=0, settings={})
    assert card["kept_after_dedup"] == 40
    total = 0
    for split in ("train", "validation", "test"):
        with gzip.open(tmp_path / "out" / f"{split}.jsonl.gz", "rt") as fh:
            records = [json.loads(line) for line in fh]
        assert all(split_of(r["prompt"]) == split for r in records)
        assert card["splits"][split]["stories"] == len(records)
        total += len(records)
    assert total == 40 and json.loads((tmp_path / "out" / "card.json").read_text())["seed"] == 0


@pytest.mark.slow
def test_generation_on_a_few_prompts_with_the_real_base(tmp_path):
    progress = generate(tmp_path, seed=0, batch_size=3, max_minutes=5, max_prompts=3, temperature=0.8,
                        top_p=0.95, dtype="float32", threads=None)
    assert progress["next"] == 3
    lines = (tmp_path / "raw.jsonl").read_text().splitlines() if (tmp_path / "raw.jsonl").exists() else []
    assert len(lines) == progress["kept"]
    for line in lines:
        story = json.loads(line)["text"]
        assert 3 <= len(split_sentences(story)) <= 8 and story[-1] in ".!?\"'"
    # resuming at the end of the grid does nothing more
    assert generate(tmp_path, seed=0, batch_size=3, max_minutes=5, max_prompts=3, temperature=0.8,
                    top_p=0.95, dtype="float32", threads=None)["next"] == 3
