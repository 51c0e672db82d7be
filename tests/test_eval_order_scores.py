"""Scoring a pool's fills under other orders (model.eval.order_scores): each score is the exact A3 likelihood
of that order, today's scorer keeps what best of N keeps, every other keeps its own argmax."""

import json

import pytest
import torch
from stories_fixture import STORIES, write_corpus

from model.decoding import sequence_log_likelihood
from model.eval import candidates as study
from model.eval import order_scores
from model.eval.blanks import infill_example


def test_the_text_around_the_fill_comes_first_in_position_order_then_the_fill_in_its_order():
    assert order_scores.order_groups((2, 4), 6).tolist() == [0, 1, 4, 5, 2, 3]
    assert order_scores.order_groups((2, 5), 6, torch.tensor([2, 1, 0])).tolist() == [0, 1, 5, 4, 3, 2]


def test_each_score_is_the_exact_likelihood_of_its_order(tiny_loaded):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    example = infill_example(tok, tiny_loaded.start_token_id, STORIES[0], torch.Generator().manual_seed(1))
    lo, hi = example["span"]
    fills = [example["ids"][lo:hi].tolist(), [int(t) for t in torch.randint(5, 90, (hi - lo,))]]
    scores = order_scores.score_fills(model, example, fills, n_random=2, generator=torch.Generator().manual_seed(7))
    length = example["ids"].numel()
    for i, fill in enumerate(fills):
        ids = torch.cat([example["ids"][:lo], torch.tensor(fill), example["ids"][hi:]])
        for key, order in (("fill_last", None), ("fill_last_rtl", torch.arange(hi - lo).flip(0))):
            _, per = sequence_log_likelihood(model, ids, order_scores.order_groups((lo, hi), length, order))
            assert scores[key][i] == pytest.approx(float(per[lo:hi].sum()), abs=1e-3)
    again = order_scores.score_fills(model, example, fills, n_random=2, generator=torch.Generator().manual_seed(7))
    assert again == scores  # seeded: the random orders are the same orders
    with pytest.raises(ValueError, match="span's"):
        order_scores.score_fills(model, example, [fills[0][:-1]])


def test_the_scored_pool_keeps_todays_choice_and_each_scorers_argmax(tmp_path, tiny_loaded):
    corpus, pool, scored = write_corpus(tmp_path / "corpus"), tmp_path / "pool.jsonl", tmp_path / "scored.jsonl"
    kw = dict(split="test", limit=2, blanks_per_story=1, general_infill=0, data_dir=corpus)
    study.decode_pool(tiny_loaded, pool, **kw)
    written = order_scores.rescore_pool(tiny_loaded, pool, scored, **kw)
    records = [json.loads(line) for line in scored.read_text().splitlines()]
    originals = [json.loads(line) for line in pool.read_text().splitlines()]
    assert written == len(records) == len(originals) >= 1
    for record, original in zip(records, originals, strict=True):
        assert [c["name"] for c in record["candidates"]] == list(study.SETS["now"])
        today = max(record["candidates"], key=lambda c, r=record: (c["logp"], -r["candidates"].index(c)))
        assert today["fill"] == study.kept(original, study.SETS["now"])["fill"]
    result = order_scores.summary(records)["stories"]
    assert result["blanks"] == len(records) and set(order_scores.SCORERS) <= set(result)
    assert result["fill last"]["rougeL minus today"]["n"] == len(records)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**originals[0], "id": "no such story"}) + "\n")
    with pytest.raises(ValueError, match="not one of the split's"):
        order_scores.rescore_pool(tiny_loaded, bad, tmp_path / "out.jsonl", **kw)
