"""The right-context probe (model.eval.right_context): exact teacher-forced fill NLLs on the tiny model."""

import json

import pytest
import torch

from model.decoding import sequence_log_likelihood
from model.eval.blanks import make_example, prefix_only
from model.eval.right_context import base_fill_nll, fill_nll, main, measure


def example(suffix):
    return make_example([0, 11, 12, 13, 14], [21, 22, 23], suffix, "ref")


def test_prefix_only_ignores_the_suffix_and_both_sides_uses_it(tiny):
    a, b = example([31, 32, 33, 34]), example([41, 42, 43, 44])
    assert fill_nll(tiny, prefix_only(a)) == pytest.approx(fill_nll(tiny, prefix_only(b)), abs=1e-6)
    assert fill_nll(tiny, a) != pytest.approx(fill_nll(tiny, b), abs=1e-4)


def test_prefix_only_is_the_left_to_right_likelihood_of_the_fill(tiny):
    ex = example([31, 32])
    ids = ex["ids"][:8]
    _, per = sequence_log_likelihood(tiny, ids, torch.arange(8))
    assert fill_nll(tiny, prefix_only(ex)) == pytest.approx(-float(per[5:8].mean()), abs=1e-5)


def test_base_fill_nll_is_the_causal_likelihood_of_the_fill(tiny):
    ex = example([31, 32])
    ids = torch.as_tensor(ex["ids"][:8]).view(1, -1)
    with torch.no_grad():
        logits = tiny(ids, return_content_logits=True).content_logits[0].float().log_softmax(-1)
    expected = -sum(float(logits[i - 1, ids[0, i]]) for i in range(5, 8)) / 3
    assert base_fill_nll(tiny, ex) == pytest.approx(expected, abs=1e-5)


def test_measure_and_the_command_line(tiny_loaded, capsys):
    out = measure(tiny_loaded, [example([31, 32]), example([41])])
    assert out["n"] == 2 and out["right_context_gain"] == pytest.approx(out["a3_prefix_only"] - out["a3_both_sides"],
                                                                         abs=1e-3)
    main(["--model", "tiny", "--limit", "3", "--json"])
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["split"] == "validation" and data["stories"]["n"] >= 1 and data["general"]["n"] >= 1
    assert {"a3_both_sides", "a3_prefix_only", "right_context_gain"} <= set(data["stories"])
