import inspect
import json
import math
import subprocess
import sys

import pytest
import torch
from stories_fixture import STORIES, write_corpus

from model.data.stories import split_sentences
from model.decoding import causal_log_probs, collect, decode_plan
from model.eval.blanks import infill_example, middle_infill_example, prefix_only, story_blanks
from model.eval.infill import DEFAULT_METHOD, EVAL_METHODS, PAGE_LABELS, compare_runs, evaluate, fill
from model.eval.metrics import (
    bootstrap_ci,
    continuation_nll,
    ends_sentence,
    has_repeat,
    paired_difference,
    suffix_nll,
)
from model.plans import make_plan

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
SCORES = {"rouge1", "rouge2", "rougeL", "suffix_nll", "text_nll", "ends_sentence", "repeats", "rougeL_ci95",
          "suffix_nll_ci95"}


def test_infill_example_masks_exactly_one_whole_sentence(tokenizer):
    for seed in range(5):
        ex = infill_example(tokenizer, 0, STORIES[0], torch.Generator().manual_seed(seed))
        lo, hi = ex["span"]
        assert (~ex["given"]).nonzero(as_tuple=True)[0].tolist() == list(range(lo, hi))
        assert ex["reference"] in split_sentences(STORIES[0])[1:]  # never the first sentence
        assert tokenizer.decode(ex["ids"][lo:hi].tolist()).strip() == ex["reference"]
        assert ex["prefix"] + ex["ids"][lo:hi].tolist() + ex["suffix"] == ex["ids"].tolist()
    assert infill_example(tokenizer, 0, "Only one. And two.", torch.Generator()) is None


def test_middle_infill_masks_the_middle_of_one_sentence(tokenizer):
    sentence = "The committee approved the new budget after a long and difficult debate."
    ex = middle_infill_example(tokenizer, 7, sentence)
    lo, hi = ex["span"]
    n = len(tokenizer(sentence, add_special_tokens=False).input_ids)
    assert ex["ids"][0] == 7 and len(ex["ids"]) == n + 1
    assert 1 < lo < hi < n + 1 and abs((hi - lo) - 0.4 * n) <= 1  # given text on both sides
    assert ex["reference"] and ex["reference"] in sentence
    assert middle_infill_example(tokenizer, 7, "Too short.") is None


def test_suffix_nll_of_the_reference_equals_a_direct_computation(tiny_loaded):
    base, tok = tiny_loaded.base(), tiny_loaded.tokenizer
    ex = infill_example(tok, tiny_loaded.start_token_id, STORIES[1], torch.Generator().manual_seed(0))
    lo, hi = ex["span"]
    ids = ex["ids"]
    with torch.no_grad():  # by hand: a causal LM over the whole text, the rows that predict the suffix
        logits = base(ids.view(1, -1), return_content_logits=True).content_logits[0].float()
    logp = logits.log_softmax(-1)
    direct = -sum(float(logp[i - 1, ids[i]]) for i in range(hi, len(ids))) / (len(ids) - hi)
    assert suffix_nll(base, ex["prefix"], ids[lo:hi].tolist(), ex["suffix"]) == pytest.approx(direct, abs=1e-5)
    together = -sum(float(logp[i - 1, ids[i]]) for i in range(lo, len(ids))) / (len(ids) - lo)
    assert continuation_nll(base, ex["prefix"], ids[lo:hi].tolist(), ex["suffix"]) == pytest.approx(
        (direct, together), abs=1e-5)
    assert causal_log_probs(base, ids).shape == (len(ids) - 1,)
    other = [(t + 1) % len(tok) for t in ids[lo:hi].tolist()]  # another fill gives another score
    assert suffix_nll(base, ex["prefix"], other, ex["suffix"]) != pytest.approx(direct, abs=1e-5)


def test_a3_prefix_only_never_sees_the_suffix(tiny_loaded):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    ex = infill_example(tok, tiny_loaded.start_token_id, STORIES[0], torch.Generator().manual_seed(1))
    lo, hi = ex["span"]
    changed_ids = ex["ids"].clone()
    changed_ids[hi:] = (changed_ids[hi:] * 7 + 3) % len(tok)
    changed = {**ex, "ids": changed_ids}
    assert fill("a3_prefix_only", model, None, ex) == fill("a3_prefix_only", model, None, changed)
    assert prefix_only(ex)["ids"].tolist() == prefix_only(changed)["ids"].tolist() == ex["ids"][:hi].tolist()

    def step_logprobs(example):
        plan = make_plan(example["ids"], given=example["given"], order="left_to_right")
        return [lp for step in collect(decode_plan(model, plan)).steps for lp in step.token_logprobs]

    # the decoding it runs is unchanged to the last digit, while with both sides given it is not
    assert step_logprobs(prefix_only(ex)) == step_logprobs(prefix_only(changed))
    assert step_logprobs(ex) != step_logprobs(changed)


def test_ends_sentence_reads_the_last_mark():
    for text in ("He went home.", "Did she?", "Run!", 'He said "stop."', "(It was late.)", "Done. "):
        assert ends_sentence(text), text
    for text in ("He decided to visit the library and find out what", "", "a, b", "e.g", "Mr"):
        assert not ends_sentence(text), text


@pytest.mark.parametrize("before, fill_text, after, expected", [
    ("He went", "to to the shop", "and back.", True),  # a doubled word inside the fill
    ("The trouble with being punctual is", "that that", "people think", True),
    ("I saw the", "the dog", "run.", True),  # doubled across the blank's start
    ("She read", "a book a book", "to him.", False),  # "a book" twice: a 2-gram, not a 3-gram
    ("They met at the", "park at the", "park today.", True),  # "at the park" twice, across the context
    ("to the library, he went", "to the library", "again.", False),  # the first is 4+ words back: out of reach
    ("He went", "to the library", "and then home.", False),
    ("Machines that have", "been damaged by a fire can", "fail.", False),
    ("", "", "anything", False),  # an empty fill repeats nothing
    ("It is", "IS", "done.", True),  # case-insensitive
    ("word word", "fresh", "text", False),  # a repeat wholly in the context is not the fill's
    ("Bella", "didn’t know what was wrong. I don’t know what", "happened.", False),  # a curly apostrophe
    ("Bella", "didn't know what was wrong. I don't know what", "happened.", False),  # is one, as a straight one
    ("She", "didn’t know what was wrong. She didn’t know what", "to do.", True),
])
def test_repeats_are_read_from_the_fill_and_three_words_each_side(before, fill_text, after, expected):
    assert has_repeat(before, fill_text, after) is expected


def test_the_default_method_is_the_pages_default_decoder():
    from app.demo_trace import DEMO_REQUEST
    from app.session import Explorer
    from app.ui.api import infill_endpoint
    from app.ui.text_tab import EXAMPLES

    assert PAGE_LABELS[DEFAULT_METHOD] == EXAMPLES[0][1] == DEMO_REQUEST["method"]
    assert inspect.signature(Explorer.infill).parameters["method"].default == EXAMPLES[0][1]  # the API's default
    assert inspect.signature(infill_endpoint(None)).parameters["mode"].default == EXAMPLES[0][1]


def test_a3_rerank_fills_with_the_best_of_n_and_never_asks_the_judge(tiny_loaded):
    """The rerank's fill is best_of_n's choice; the base model (the evaluation's judge) is never called."""
    from model.rerank import best_of_n

    class Judge:  # a spy: any use of the base model fails the test
        def __getattr__(self, name):
            raise AssertionError(f"the rerank used the base model ({name})")

    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    ex = infill_example(tok, tiny_loaded.start_token_id, STORIES[0], torch.Generator().manual_seed(1))
    lo, hi = ex["span"]
    expected = best_of_n(model, ex["ids"], ex["given"]).best.trace.final_ids[lo:hi]
    assert fill("a3_rerank", model, Judge(), ex) == expected


def test_a3_outside_in_decodes_both_edges_of_the_blank_first(tiny_loaded):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    ex = infill_example(tok, tiny_loaded.start_token_id, STORIES[0], torch.Generator().manual_seed(1))
    lo, hi = ex["span"]
    plan = make_plan(ex["ids"], given=ex["given"], order="outside_in")
    trace = collect(decode_plan(model, plan, preview_open=False))
    first_two = sorted(p for step in trace.steps[:2] for p in step.positions)
    assert first_two == [lo, hi - 1]  # the blank's two ends, before its inside
    assert fill("a3_outside_in", model, None, ex) == trace.final_ids[lo:hi]
    # the same model and blank, only the order differs: the fills are not the same decode
    ltr = collect(decode_plan(model, make_plan(ex["ids"], given=ex["given"]), preview_open=False))
    assert [s.positions for s in ltr.steps] != [s.positions for s in trace.steps]


def test_evaluate_reports_every_metric(tmp_path, tiny_loaded):
    result = evaluate(tiny_loaded, data_dir=write_corpus(tmp_path), limit=2, general_limit=6, general_infill=3)
    assert result["n_examples"] == 2 and result["n_infill"] == 2 and result["seed"] == 0
    for key in ("ppl_base_ar", "ppl_a3_ar_order", "ppl_a3_random_s4"):
        assert result[key] > 1 and result["general"][key] > 1
    for part in (result["infill"], result["general"]["infill"]):
        assert set(part) == {*EVAL_METHODS, "reference"}
        for method in EVAL_METHODS:
            assert set(part[method]) == SCORES
            assert all(0 <= part[method][k] <= 100 for k in ("rouge1", "rouge2", "rougeL"))
            assert part[method]["suffix_nll"] > 0
            assert 0 <= part[method]["ends_sentence"] <= 100
        assert part["reference"]["suffix_nll"] > 0 and part["reference"]["text_nll"] > 0
    assert result["infill"]["reference"]["ends_sentence"] == 100.0  # a masked story sentence ends itself
    for part in (result, result["general"]):
        paired = part["infill_paired"]
        a3 = ("a3_plan", "a3_outside_in", "a3_dynamic", "a3_rerank")
        singles = ("a3_plan", "a3_outside_in", "a3_dynamic")  # best of N is paired with each it could replace
        assert set(paired) == {f"{a}-{b}" for a in a3
                               for b in ("diffusion", "one_step_parallel", "ar_prefix", "a3_prefix_only", "a3_plan",
                                         *(singles if a == "a3_rerank" else ()))
                               if a != b}
        for a, b in (key.split("-") for key in paired):
            assert set(paired[f"{a}-{b}"]) == {"rougeL", "suffix_nll", "text_nll"}
            for metric in ("rougeL", "suffix_nll", "text_nll"):
                assert paired[f"{a}-{b}"][metric]["mean"] == pytest.approx(
                    part["infill"][a][metric] - part["infill"][b][metric], abs=2e-3)
            lo, hi = part["infill"][a]["rougeL_ci95"]
            assert lo <= part["infill"][a]["rougeL"] <= hi
    assert result["options"] == {"limit": 2, "general_limit": 6, "general_infill": 3, "blanks_per_story": 1,
                                 "methods": list(EVAL_METHODS)}
    general = result["general"]
    assert general["n_documents"] == 6 and general["n_infill"] == 3
    assert {s for s, v in general["by_source"].items() if v["n_tokens"]} == {"wordnet", "pydocs", "jargon"}


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_examples():
    g = torch.Generator().manual_seed(0)
    few, many = torch.randn(20, generator=g).tolist(), torch.randn(2000, generator=g).tolist()
    lo, hi = bootstrap_ci(few)
    assert lo < sum(few) / len(few) < hi
    lo2, hi2 = bootstrap_ci(many)
    assert hi2 - lo2 < (hi - lo) / 4  # about 1/sqrt(100) as wide
    assert bootstrap_ci(few) == [lo, hi]  # seeded
    assert bootstrap_ci([3.0] * 10) == [3.0, 3.0] and bootstrap_ci([1.0]) is None


def test_paired_difference_sees_a_small_consistent_gain_that_unpaired_intervals_hide():
    g = torch.Generator().manual_seed(1)
    base = (torch.randn(50, generator=g) * 10).tolist()
    better = [x + 1.0 + 0.1 * float(torch.randn(1, generator=g)) for x in base]
    paired = paired_difference(better, base)
    assert paired["n"] == 50 and paired["mean"] == pytest.approx(1.0, abs=0.1)
    assert paired["ci95"][0] > 0  # the paired interval excludes 0 ...
    assert bootstrap_ci(better)[0] < bootstrap_ci(base)[1]  # ... the two methods' own intervals overlap
    same = paired_difference(base, base)
    assert same["mean"] == 0 and same["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same examples"):
        paired_difference([1.0, 2.0], [1.0])


def test_clustered_interval_counts_a_story_once_however_many_blanks_it_has():
    g = torch.Generator().manual_seed(2)
    per_story = torch.randn(30, generator=g).tolist()
    tripled, stories = [v for v in per_story for _ in range(3)], [i for i in range(30) for _ in range(3)]
    assert bootstrap_ci(tripled, clusters=stories) == bootstrap_ci(per_story)  # same draws, same evidence
    lo, hi = bootstrap_ci(tripled)  # as if independent: too narrow
    lo3, hi3 = bootstrap_ci(tripled, clusters=stories)
    assert (hi - lo) < 0.7 * (hi3 - lo3)
    assert bootstrap_ci(per_story, clusters=list(range(30))) == bootstrap_ci(per_story)
    assert bootstrap_ci([1.0, 2.0], clusters=["a", "a"]) is None  # one story: no interval
    with pytest.raises(ValueError, match="one cluster label per value"):
        bootstrap_ci([1.0, 2.0], clusters=["a"])


def test_several_blanks_per_story_are_different_sentences_and_keep_the_default_first(tokenizer):
    for seed in range(4):
        one = story_blanks(tokenizer, 0, STORIES[0], torch.Generator().manual_seed(seed))
        three = story_blanks(tokenizer, 0, STORIES[0], torch.Generator().manual_seed(seed), 3,
                             torch.Generator().manual_seed(99))
        assert len(one) == 1 and len(three) == 3
        assert three[0]["reference"] == one[0]["reference"] and torch.equal(three[0]["ids"], one[0]["ids"])
        assert len({ex["sentence"] for ex in three}) == 3 and all(ex["sentence"] >= 1 for ex in three)
        for ex in three:
            lo, hi = ex["span"]
            assert tokenizer.decode(ex["ids"][lo:hi].tolist()).strip() == ex["reference"]
    n_sentences = len(split_sentences(STORIES[0]))
    many = story_blanks(tokenizer, 0, STORIES[0], torch.Generator(), 100, torch.Generator())
    assert len(many) == n_sentences - 1  # every sentence but the first, once


def test_blanks_per_story_multiplies_the_examples_and_leaves_the_default_alone(tmp_path, tiny_loaded):
    corpus = write_corpus(tmp_path)
    kw = dict(data_dir=corpus, limit=2, general_limit=0, methods=("a3_plan", "ar_prefix"), per_example=True)
    one, two = evaluate(tiny_loaded, **kw), evaluate(tiny_loaded, blanks_per_story=2, **kw)
    assert two["n_infill"] == 2 * one["n_infill"] and two["blanks_per_story"] == 2 and "blanks_per_story" not in one
    assert two["ppl_a3_random_s4"] == one["ppl_a3_random_s4"]  # the perplexities' random groups are untouched
    first = two["infill"]["a3_plan"]["per_example"]
    assert first["rougeL"][::2] == one["infill"]["a3_plan"]["per_example"]["rougeL"]
    assert first["rougeL_cluster"][0] == first["rougeL_cluster"][1] != first["rougeL_cluster"][2]
    with pytest.raises(ValueError, match="at least 1"):
        evaluate(tiny_loaded, blanks_per_story=0, **kw)
    with pytest.raises(ValueError, match="their own generator"):
        story_blanks(tiny_loaded.tokenizer, 0, STORIES[0], torch.Generator(), 2)


def test_compare_runs_pairs_two_runs_on_the_same_blanks_and_refuses_different_ones(tmp_path, tiny_loaded):
    corpus = write_corpus(tmp_path)
    kw = dict(data_dir=corpus, limit=3, general_limit=0, methods=("a3_plan", "ar_prefix"), per_example=True,
              blanks_per_story=2)
    run = evaluate(tiny_loaded, **kw)
    per = run["infill"]["a3_plan"]["per_example"]
    ids = per["rougeL_id"]
    assert ids[1].startswith(ids[0] + "#") and len(set(ids)) == len(ids)
    shifted = json.loads(json.dumps(run))
    shifted["infill"]["a3_plan"]["per_example"]["rougeL"] = [v + 2.0 for v in per["rougeL"]]
    diff = compare_runs(run, shifted)["stories.a3_plan"]
    assert diff["rougeL"]["mean"] == pytest.approx(2.0) and diff["rougeL"]["ci95"] == [2.0, 2.0]
    assert diff["suffix_nll"]["mean"] == 0.0 and set(compare_runs(run, shifted)) == {
        "stories.a3_plan", "stories.ar_prefix", "stories.perplexity"}
    # each document's NLL per token under both orders, paired: a model worse by 0.5 nats on every document
    docs = run["perplexity_per_example"]
    assert len(docs["n_tokens"]) == 3 and set(docs) == {"base_ar_nll", "a3_ar_nll", "a3_random_s4_nll", "n_tokens"}
    nll = sum(v * n for v, n in zip(docs["a3_ar_nll"], docs["n_tokens"], strict=True)) / sum(docs["n_tokens"])
    assert math.exp(nll) == pytest.approx(run["ppl_a3_ar_order"], rel=1e-3)
    worse = json.loads(json.dumps(run))
    worse["perplexity_per_example"]["a3_random_s4_nll"] = [v + 0.5 for v in docs["a3_random_s4_nll"]]
    paired = compare_runs(run, worse)["stories.perplexity"]
    assert paired["a3_random_s4_nll"]["mean"] == pytest.approx(0.5) and paired["a3_ar_nll"]["mean"] == 0.0
    other = evaluate(tiny_loaded, **{**kw, "blanks_per_story": 1})
    with pytest.raises(ValueError, match="different blanks"):
        compare_runs(run, other)
    plain = json.loads(json.dumps(run))  # as made without --per-example
    for scores in plain["infill"].values():
        scores.pop("per_example", None)
    plain.pop("perplexity_per_example")
    with pytest.raises(ValueError, match="--per-example"):
        compare_runs(plain, run)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("progress\n" + json.dumps(run) + "\n")
    b.write_text(json.dumps(shifted))
    out = subprocess.run([sys.executable, "-m", "model.eval", "--compare", str(a), str(b)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["second_minus_first"]["stories.a3_plan"]["rougeL"]["mean"] == pytest.approx(2.0)
    b.write_text("not json")
    out = subprocess.run([sys.executable, "-m", "model.eval", "--compare", str(a), str(b)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not a model.eval output" in out.stderr and "Traceback" not in out.stderr


def test_cli_refuses_bad_numbers_and_an_unloadable_model_with_a_message(tmp_path):
    for flags, code, words in ((["--limit", "-1"], 2, "--limit must be at least 0"),
                               (["--threads", "-1"], 2, "--threads must be at least 1"),
                               (["--general-limit", "-1"], 2, "--general-limit must be at least 0"),
                               (["--model", str(tmp_path / "missing")], 3, "--model")):
        out = subprocess.run([sys.executable, "-m", "model.eval", "--json", *flags], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == code and words in out.stderr and "Traceback" not in out.stderr, out.stderr[-800:]


def test_evaluate_without_a_base_drops_the_base_metrics_and_says_why(tmp_path, tiny_loaded):
    from model.loading import ModelLoadError

    class NoBase:
        def __getattr__(self, name):
            return getattr(tiny_loaded, name)

        def base(self):
            raise ModelLoadError("this checkpoint names no base model")

    result = evaluate(NoBase(), data_dir=write_corpus(tmp_path), limit=1, general_limit=0)
    assert "ar_prefix" not in result["infill"] and result["ppl_base_ar"] is None
    assert result["infill"]["a3_plan"]["suffix_nll"] is None
    assert "names no base" in result["base_unavailable"]
    with pytest.raises(ValueError, match="needs the AR base.*names no base"):
        evaluate(NoBase(), data_dir=write_corpus(tmp_path), limit=1, general_limit=0, methods=("ar_prefix",))


def test_cli_prints_one_json_object_on_its_last_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "model.eval", "--json", "--model", "tiny", "--limit", "1",
                          "--data-dir", str(write_corpus(tmp_path)), "--threads", "1", "--general-limit", "3",
                          "--general-infill", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model"] == "tiny" and "infill" in result and result["n_examples"] == 1
    assert result["default_method"] == DEFAULT_METHOD and DEFAULT_METHOD in result["infill"]
    assert result["general"]["n_documents"] == 3
    assert "per_example" not in result["infill"]["a3_plan"]


def test_per_example_scores_average_to_the_reported_means(tmp_path, tiny_loaded):
    result = evaluate(tiny_loaded, data_dir=write_corpus(tmp_path), limit=3, general_limit=0,
                      methods=("a3_plan", "ar_prefix"), per_example=True)
    for method in ("a3_plan", "ar_prefix"):
        scores = result["infill"][method]
        rouge, suffix = scores["per_example"]["rougeL"], scores["per_example"]["suffix_nll"]
        assert len(rouge) == len(suffix) == result["n_infill"] == 3
        assert sum(rouge) / 3 == pytest.approx(scores["rougeL"], abs=2e-3)
        assert sum(suffix) / 3 == pytest.approx(scores["suffix_nll"], abs=2e-3)


@pytest.mark.slow
def test_default_model_evaluates_on_a_story(tmp_path, default_model):
    result = evaluate(default_model, data_dir=write_corpus(tmp_path), limit=1, general_limit=3, general_infill=1,
                      methods=("a3_plan", "ar_prefix"))
    assert 1 < result["ppl_base_ar"] < 100  # SmolLM2 on simple English stories
    assert result["infill"]["ar_prefix"]["rouge1"] >= 0
    assert 1 < result["general"]["ppl_base_ar"] < 1000


def test_fills_cache_lets_an_interrupted_run_go_on_with_the_same_result(tmp_path, tiny_loaded, monkeypatch):
    from model.eval import infill as infill_module
    from model.eval.fill_cache import FillCache, model_key

    kw = dict(data_dir=write_corpus(tmp_path), limit=2, general_limit=4, general_infill=2, per_example=True,
              methods=("a3_plan", "a3_dynamic", "a3_prefix_only"))
    path = tmp_path / "fills.jsonl"
    key = model_key(tiny_loaded.model)
    fresh = evaluate(tiny_loaded, **kw)
    first = evaluate(tiny_loaded, fills_cache=FillCache(path, key), **kw)
    made = len(path.read_text().splitlines())
    assert first["fills_read_from_cache"] == 0 and made == 3 * (first["n_infill"] + first["general"]["n_infill"])
    with path.open("a") as out:
        out.write('{"model": "' + key + '", "blank": "torn')  # a run killed mid-write
    decoded = []
    monkeypatch.setattr(infill_module, "fill", lambda method, *a, **k: decoded.append(method))
    again = evaluate(tiny_loaded, fills_cache=FillCache(path, key), **kw)
    assert decoded == [] and again["fills_read_from_cache"] == made  # nothing decoded twice
    for run in (first, again):
        for split in ("infill", "general"):
            ours = run[split] if split == "infill" else run["general"]["infill"]
            theirs = fresh[split] if split == "infill" else fresh["general"]["infill"]
            for method in kw["methods"]:
                assert ours[method]["per_example"]["fill"] == theirs[method]["per_example"]["fill"]
                assert ours[method]["per_example"]["suffix_nll"] == theirs[method]["per_example"]["suffix_nll"]
    # other weights never read these fills
    other = FillCache(path, "another-model")
    assert len(other) == 0 and path.read_text().count("\n") == made + 1  # the torn line was ended, not lost


def test_fills_cache_keys_on_the_weights_and_the_method_config(tiny_loaded):
    from model.eval.fill_cache import model_key
    from model.eval.infill import method_identity

    key = model_key(tiny_loaded.model)
    assert key == model_key(tiny_loaded.model)
    with torch.no_grad():
        param = next(tiny_loaded.model.parameters())
        kept = param.detach().clone()
        param[0].add_(1.0)
        try:
            assert model_key(tiny_loaded.model) != key
        finally:
            param.copy_(kept)
    assert model_key(tiny_loaded.model) == key
    identities = {method_identity(m) for m in EVAL_METHODS}
    assert len(identities) == len(EVAL_METHODS)
    # the no-repeat rule names other fills; off, the identities are those written before the rule existed
    assert not identities & {method_identity(m, 3) for m in EVAL_METHODS}
    assert all('"no_repeat"' not in i for i in identities)
    on, rule = json.loads(method_identity("a3_rerank", 3))
    assert '"no_repeat": 3' in on and rule  # the rule's version too: a changed rule decodes again


def test_the_no_repeat_rule_reaches_every_method_of_a_run(tmp_path, tiny_loaded, monkeypatch):
    from model.eval import infill as infill_module

    seen = []
    real = infill_module.fill

    def spy(method, model, base, example, given_grouping="causal", no_repeat=0):
        seen.append((method, no_repeat))
        return real(method, model, base, example, given_grouping, no_repeat)

    monkeypatch.setattr(infill_module, "fill", spy)
    run = evaluate(tiny_loaded, data_dir=write_corpus(tmp_path), limit=2, general_limit=0, no_repeat=3,
                   methods=("a3_plan", "a3_rerank", "ar_prefix", "a3_prefix_only"))
    assert run["options"]["no_repeat"] == 3 and seen and all(n == 3 for _, n in seen)
    assert {m for m, _ in seen} == {"a3_plan", "a3_rerank", "ar_prefix", "a3_prefix_only"}
    out = subprocess.run([sys.executable, "-m", "model.eval", "--no-repeat", "1", "--model", "tiny"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--no-repeat must be 0 (off) or an n-gram size of at least 2" in out.stderr


def test_shards_decode_every_fill_once_and_the_whole_run_reads_them_all_back(tmp_path, tiny_loaded, monkeypatch):
    from model.eval import infill as infill_module
    from model.eval.fill_cache import FillCache, model_key

    kw = dict(data_dir=write_corpus(tmp_path), limit=3, general_limit=6, general_infill=3, per_example=True,
              blanks_per_story=2, methods=("a3_plan", "a3_dynamic"))
    path, key = tmp_path / "fills.jsonl", model_key(tiny_loaded.model)
    fresh = evaluate(tiny_loaded, **kw)
    real_fill, decoded = infill_module.fill, []

    def counting_fill(method, *args, **kwargs):
        decoded.append(method)
        return real_fill(method, *args, **kwargs)

    monkeypatch.setattr(infill_module, "fill", counting_fill)
    shards = [evaluate(tiny_loaded, fills_cache=FillCache(path, key), shard=(k, 2), **kw) for k in (0, 1)]
    total = fresh["n_infill"] + fresh["general"]["n_infill"]
    assert len(decoded) == 2 * total  # every (blank, method) decoded once, by one shard or the other
    assert shards[0]["fills_kept"] < shards[1]["fills_kept"] == 2 * total
    decoded.clear()
    whole = evaluate(tiny_loaded, fills_cache=FillCache(path, key), **kw)
    assert decoded == [] and whole["fills_read_from_cache"] == 2 * total
    for split in ("infill", "general"):
        ours = whole[split] if split == "infill" else whole["general"]["infill"]
        theirs = fresh[split] if split == "infill" else fresh["general"]["infill"]
        for method in kw["methods"]:
            assert ours[method]["per_example"] == theirs[method]["per_example"]


def test_a_shard_needs_a_fills_cache(tmp_path, tiny_loaded):
    with pytest.raises(ValueError, match="needs a fills cache"):
        evaluate(tiny_loaded, data_dir=write_corpus(tmp_path), limit=1, general_limit=0, shard=(0, 2))


@pytest.mark.parametrize("argv, message", [(["--shard", "2/2", "--fills-cache", "f.jsonl"], "0 <= K < N"),
                                           (["--shard", "one"], "K/N"),
                                           (["--shard", "0/2"], "--fills-cache")])
def test_cli_refuses_a_bad_shard_with_a_message(argv, message, capsys):
    from model.eval.cli import main

    with pytest.raises(SystemExit) as err:
        main(["--model", "tiny", *argv])
    assert err.value.code == 2 and message in capsys.readouterr().err
