"""bench.int8_gate: the pass rule on hand-made numbers, and one small run on the tiny model (its JSON, its
fills kept and read back, a float32 fills file read and never written)."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from bench.int8_gate import GATE, PAIRED_METRICS, main, verdict

pytestmark = pytest.mark.usefixtures("one_thread")


def _numbers(identical=(0.95, 0.92, 0.90), ci=(-0.5, 0.4), ratio=1.01):
    pooled, stories, general = identical
    paired = {split: {method: {metric: {"mean": 0.0, "ci95": list(ci) if ci else None, "n": 8}
                               for metric in PAIRED_METRICS} for method in ("a3_plan", "a3_dynamic")}
              for split in ("stories", "general")}
    perplexity = {split: {"ratio": {"ppl_a3_ar_order": ratio, "ppl_a3_random_s4": ratio}}
                  for split in ("stories", "general")}
    return {"pooled": pooled, "stories": stories, "general": general}, paired, perplexity


def test_the_gate_passes_when_every_check_holds_and_at_its_bounds():
    assert verdict(*_numbers()) == {"checks": {"identical_pooled": True, "identical_per_split": True,
                                               "intervals_hold_zero": True, "perplexity_within_tolerance": True},
                                    "failures": [], "passed": True}
    assert verdict(*_numbers(identical=(0.90, 0.85, 0.85), ci=(0.0, 0.0), ratio=0.98))["passed"]
    assert verdict(*_numbers(ratio=1.02))["passed"]
    assert GATE == {"identical_pooled": 0.90, "identical_per_split": 0.85, "perplexity_tolerance": 0.02}


@pytest.mark.parametrize(("numbers", "check"), [
    (_numbers(identical=(0.89, 0.95, 0.95)), "identical_pooled"),
    (_numbers(identical=(0.93, 0.99, 0.84)), "identical_per_split"),
    (_numbers(identical=(0.93, None, 0.95)), "identical_per_split"),  # a split not measured
    (_numbers(ci=(0.1, 0.9)), "intervals_hold_zero"),
    (_numbers(ci=(-0.9, -0.01)), "intervals_hold_zero"),
    (_numbers(ci=None), "intervals_hold_zero"),  # under two stories: no interval, no pass
    (_numbers(ratio=1.021), "perplexity_within_tolerance"),
    (_numbers(ratio=0.97), "perplexity_within_tolerance"),
    (_numbers(ratio=float("nan")), "perplexity_within_tolerance"),
])
def test_the_gate_fails_when_one_check_fails(numbers, check):
    result = verdict(*numbers)
    assert not result["passed"] and not result["checks"][check] and result["failures"]
    assert all(ok for name, ok in result["checks"].items() if name != check)


def test_one_interval_off_zero_fails_the_gate_and_is_named():
    identical, paired, perplexity = _numbers()
    paired = copy.deepcopy(paired)
    paired["general"]["a3_dynamic"]["text_nll"]["ci95"] = [0.02, 0.3]
    result = verdict(identical, paired, perplexity)
    assert not result["passed"] and result["failures"] == ["general a3_dynamic text_nll: interval [0.02, 0.3] "
                                                           "does not hold 0"]
    del paired["general"]
    assert "no paired differences on general" in verdict(identical, paired, perplexity)["failures"]


def _run(capsys, *args) -> dict:
    main(["--model", "tiny", "--json", "--limit", "1", "--general-infill", "1", "--general-limit", "2",
          "--methods", "a3_plan", *args])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_gate_runs_on_the_tiny_model_and_keeps_its_fills(tmp_path, capsys):
    cache = tmp_path / "fills.jsonl"
    first = _run(capsys, "--timing-rounds", "1", "--fills-cache", str(cache), "--keep", "lm_head")
    for key in ("passed", "checks", "failures", "identical_fills", "identical_by_method", "token_agreement",
                "paired", "perplexity", "step_ms", "n_blanks", "keep", "kept", "scheme", "gate", "fills"):
        assert key in first, key
    assert isinstance(first["passed"], bool) and first["kept"] == ["lm_head"] and first["quantized_linears"] == 14
    assert set(first["n_blanks"]) == {"stories", "general"} and first["n_blanks"]["stories"] >= 1
    assert set(first["identical_fills"]) == {"pooled", "stories", "general"}
    assert set(first["paired"]["stories"]["a3_plan"]) == set(PAIRED_METRICS)
    ppl = first["perplexity"]["stories"]
    kind = "ppl_a3_ar_order"
    assert ppl["ratio"][kind] == pytest.approx(ppl["int8"][kind] / ppl["fp32"][kind], rel=1e-3)
    assert first["step_ms"]["fp32"] > 0 and first["step_ms"]["int8"] > 0
    n_fills = first["n_blanks"]["stories"] + first["n_blanks"]["general"]  # one method
    assert first["fills"]["fp32"]["decoded"] == first["fills"]["int8"]["decoded"] == n_fills

    again = _run(capsys, "--timing-rounds", "0", "--fills-cache", str(cache), "--keep", "lm_head")
    assert again["fills"]["fp32"]["cache"] == again["fills"]["int8"]["cache"] == n_fills
    assert again["fills"]["fp32"]["decoded"] == again["fills"]["int8"]["decoded"] == 0
    assert again["identical_fills"] == first["identical_fills"] and again["step_ms"] is None

    digest = hashlib.sha256(cache.read_bytes()).hexdigest()
    read_only = _run(capsys, "--timing-rounds", "0", "--fp32-fills", str(cache), "--keep", "lm_head")
    assert read_only["fills"]["fp32"]["read_only"] == n_fills and read_only["fills"]["int8"]["decoded"] == n_fills
    assert hashlib.sha256(cache.read_bytes()).hexdigest() == digest  # the float32 file is never written


def test_a_bad_keep_entry_is_a_clear_command_line_error(capsys):
    with pytest.raises(SystemExit):
        main(["--model", "tiny", "--json", "--limit", "0", "--general-infill", "0", "--keep", "lm_haed"])
    assert "names no Linear module" in capsys.readouterr().err
