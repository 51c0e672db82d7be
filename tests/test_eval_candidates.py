"""The candidates study (model.eval.candidates): a set's choice on the pool is what best of N with that set
keeps; the pool holds best of N's candidates of today and of before, configured as they were; decoding goes
on where it stopped; the summary weighs every set on the same blanks."""

import json

import pytest
import torch
from stories_fixture import STORIES, write_corpus

from model.config import DecodeConfig, Sampler
from model.eval import candidates as study
from model.eval.blanks import infill_example
from model.eval.infill import base_or_none
from model.rerank import CANDIDATES, best_of_n, candidates_with


def test_a_sets_choice_is_what_best_of_n_with_that_set_keeps(tiny_loaded):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    example = infill_example(tok, tiny_loaded.start_token_id, STORIES[0], torch.Generator().manual_seed(1))
    record = study.blank_record(model, base_or_none(tiny_loaded)[0], tok, example)
    assert [c["name"] for c in record["candidates"]] == [name for name, _ in study.POOL]
    lo, hi = example["span"]
    for names, configs in ((study.SETS["now"], candidates_with(3)),
                           (study.SETS["before"], candidates_with(3, [(n, c) for n, c in study.POOL
                                                                       if n in study.SETS["before"]]))):
        found = best_of_n(model, example["ids"], example["given"], candidates=configs)
        assert study.kept(record, names)["fill"] == found.best.trace.final_ids[lo:hi]
        # the record keeps 4 decimals of a score computed in a batch of another size: equal to that rounding
        assert [c.logp for c in found.candidates] == pytest.approx(
            [c["logp"] for c in record["candidates"] if c["name"] in names], abs=5e-4)


def test_the_pool_holds_best_of_ns_candidates_of_today_and_of_before():
    pool = dict(study.POOL)
    assert [name for name, _ in CANDIDATES] == list(study.SETS["now"])
    assert all(pool[name] == config for name, config in CANDIDATES)
    assert pool["outside-in"] == DecodeConfig("plan", order="outside_in", preview_open=False)
    assert pool["right to left"] == DecodeConfig("plan", order="right_to_left", preview_open=False)
    assert pool["sampled, T 0.7, seed 4"] == DecodeConfig("plan", order="left_to_right", sampler=Sampler(0.7), seed=4,
                                                          preview_open=False)
    assert all(set(names) <= set(pool) for names in study.SETS.values())
    assert len(pool) == len(study.POOL)  # no name twice


def test_decoding_goes_on_where_it_stopped_and_the_summary_weighs_every_set(tmp_path, tiny_loaded, capsys):
    corpus, out = write_corpus(tmp_path / "corpus"), tmp_path / "pool.jsonl"
    kw = dict(split="test", limit=2, blanks_per_story=2, general_infill=0, data_dir=corpus)
    first = study.decode_pool(tiny_loaded, out, shard=(0, 2), **kw)
    second = study.decode_pool(tiny_loaded, out, shard=(1, 2), **kw)
    again = study.decode_pool(tiny_loaded, out, **kw)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert first >= 1 and second >= 1 and again == 0 and len(records) == first + second
    assert len({r["id"] for r in records}) == len(records) and {r["split"] for r in records} == {"stories"}
    result = study.summary(records)
    stories = result["stories"]
    assert stories["blanks"] == len(records) and "general" not in result
    for label, names in study.SETS.items():
        assert sum(stories[label]["kept"].values()) == len(records) and set(stories[label]["kept"]) <= set(names)
        assert 0 <= stories[label]["ends_sentence"] <= 100
    assert "minus before" in stories["now"] and "minus before" not in stories["before"]
    study.main(["--summary", str(out)])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))


@pytest.mark.parametrize("argv, message", [([], "one of them"), (["--out", "a", "--summary", "b"], "one of them"),
                                           (["--summary", "/nonexistent.jsonl"], "no file"),
                                           (["--out", "x.jsonl", "--shard", "2/2"], "--shard must be")])
def test_the_command_line_says_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        study.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err
