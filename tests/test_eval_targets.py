"""model.eval.targets: the page-default targets read off an evaluation run, against hand-made runs whose
answers are known, and on a real (tiny) run."""

import json

import pytest
from stories_fixture import write_corpus

from model.eval.infill import evaluate
from model.eval.targets import check, main

N = 12


def _method(rouge, suffix, text, repeats, stories):
    return {"rougeL": sum(rouge) / len(rouge), "repeats": repeats,
            "per_example": {"rougeL": rouge, "suffix_nll": suffix, "text_nll": text,
                            "rougeL_cluster": stories, "suffix_nll_cluster": stories, "text_nll_cluster": stories}}


def _run(winner_gain: float, *, winner_repeats: float = 2.0, reference_repeats: float = 4.0) -> dict:
    """Stories and general text alike: a3_dynamic better than every baseline by winner_gain on every blank
    (with a little spread), the other decoders equal to the baselines."""
    stories = [f"s{i // 2}" for i in range(N)]  # two blanks per story
    spread = [0.1 * (i % 3) for i in range(N)]
    base = [10 + s for s in spread]
    nll = [3 - s for s in spread]
    infill = {
        "ar_prefix": _method(base, nll, nll, 5.0, stories),
        "diffusion": _method(base, nll, nll, 5.0, stories),
        "a3_plan": _method(base, nll, nll, 3.0, stories),
        "a3_dynamic": _method([r + winner_gain for r in base], [x - winner_gain / 10 for x in nll], nll,
                              winner_repeats, stories),
        "a3_rerank": _method([r + 2 * winner_gain for r in base], [x - winner_gain / 10 for x in nll], nll,
                             winner_repeats, stories),
        "reference": {"repeats": reference_repeats},
    }
    return {"model": "hand-made", "default_method": "a3_dynamic", "blanks_per_story": 4, "split": "test",
            "options": {"limit": None, "general_limit": 300, "general_infill": 120, "blanks_per_story": 4},
            "ppl_a3_ar_order": 10.0, "ppl_a3_random_s4": 60.0, "infill": infill,
            "general": {"ppl_a3_ar_order": 40.0, "ppl_base_ar": 50.0, "n_infill": N, "infill": infill}}


def test_a_decoder_better_on_every_blank_passes_and_an_equal_one_does_not():
    result = check(_run(1.0))
    dyn = result["decoders"]["a3_dynamic"]
    assert dyn["stories"]["beats_ar_prefix"]["pass"] and dyn["general"]["beats_diffusion"]["pass"]
    assert dyn["stories"]["beats_ar_prefix"]["rougeL"]["mean"] == pytest.approx(1.0)
    assert dyn["pass"] is True
    plan = result["decoders"]["a3_plan"]  # equal to the baselines: its paired intervals are [0, 0]
    assert plan["stories"]["beats_ar_prefix"]["pass"] is False and plan["pass"] is False
    assert "a3_dynamic" in result["eligible"] and "a3_plan" not in result["eligible"]
    assert result["full_run"] is True


def test_best_of_n_must_beat_the_decoder_it_replaces_with_no_more_repeats():
    result = check(_run(1.0))
    replaced = result["decoders"]["a3_rerank"]["stories"]["beats_replaced"]
    assert replaced["replaces"] == "a3_dynamic" and replaced["rougeL"]["mean"] == pytest.approx(1.0)
    assert replaced["pass"] is True
    no_gain = check(_run(1.0), replaces="a3_rerank")  # never against itself: the page's single default instead
    assert no_gain["decoders"]["a3_rerank"]["stories"]["beats_replaced"]["replaces"] == "a3_dynamic"
    run = _run(1.0)
    run["infill"]["a3_rerank"] = {**run["infill"]["a3_rerank"], "repeats": 3.0}  # more repeats than dynamic's 2
    assert check(run)["decoders"]["a3_rerank"]["stories"]["beats_replaced"]["pass"] is False


def test_repeats_above_the_originals_fail():
    result = check(_run(1.0, winner_repeats=6.0, reference_repeats=4.0))
    assert result["decoders"]["a3_dynamic"]["stories"]["repeats_vs_reference"]["pass"] is False
    assert result["decoders"]["a3_dynamic"]["pass"] is False


def test_the_model_targets():
    targets = check(_run(1.0))["model_targets"]
    assert targets["random_s4_within_5x"] == {"multiple": 6.0, "pass": False}
    assert targets["story_ppl_vs_v7"]["pass"] and targets["general_ppl_vs_base"]["pass"]
    assert targets["pass"] is False


def test_a_small_run_is_not_a_full_run_and_missing_scores_are_unknown_not_passed():
    run = _run(1.0)
    for name in ("ar_prefix", "diffusion", "a3_plan", "a3_dynamic"):
        del run["general"]["infill"][name]["per_example"]
    result = check(run)
    assert result["decoders"]["a3_dynamic"]["general"]["beats_ar_prefix"]["pass"] is None
    assert result["decoders"]["a3_dynamic"]["pass"] is None and result["eligible"] == []
    for change in ({"limit": 5}, {"general_infill": 10}, {"blanks_per_story": 1}, None):
        small = _run(1.0)
        small["options"] = None if change is None else {**small["options"], **change}
        verdict = check(small)
        assert verdict["full_run"] is False and verdict["eligible"] is None  # informative only
        assert verdict["decoders"]["a3_dynamic"]["pass"] is True


def test_best_of_n_without_the_decoder_it_replaces_is_not_measured_never_passed():
    run = _run(1.0)
    for block in (run["infill"], run["general"]["infill"]):  # one dict for both splits here
        block.pop("a3_dynamic", None)
    verdict = check(run, replaces="a3_dynamic")["decoders"]["a3_rerank"]
    assert verdict["stories"]["beats_replaced"]["pass"] is None and verdict["pass"] is None


def test_cli_reads_a_real_run_and_refuses_a_bad_file(tmp_path, tiny_loaded, capsys):
    run = evaluate(tiny_loaded, data_dir=write_corpus(tmp_path), limit=2, general_limit=0, per_example=True,
                   blanks_per_story=2, methods=("a3_plan", "a3_dynamic", "ar_prefix", "diffusion"))
    path = tmp_path / "run.json"
    path.write_text("progress line\n" + json.dumps(run) + "\n")
    main([str(path)])
    out = json.loads(capsys.readouterr().out)
    assert set(out["decoders"]) == {"a3_plan", "a3_dynamic"}
    assert out["decoders"]["a3_dynamic"]["stories"]["beats_ar_prefix"]["rougeL"]["n"] == run["n_infill"]
    assert out["decoders"]["a3_dynamic"]["general"] is None and out["full_run"] is False
    assert out["eligible"] is None
    (tmp_path / "bad.json").write_text("")
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "bad.json")])
    assert err.value.code == 2 and "not a model.eval output" in capsys.readouterr().err
