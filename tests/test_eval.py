import json
import subprocess
import sys

import pytest
import torch
from stories_fixture import STORIES, write_corpus

from model.eval import METHODS, evaluate, infill_example
from model.stories import split_sentences

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_infill_example_masks_exactly_one_whole_sentence(tokenizer):
    for seed in range(5):
        ex = infill_example(tokenizer, 0, STORIES[0], torch.Generator().manual_seed(seed))
        lo, hi = ex["span"]
        assert (~ex["given"]).nonzero(as_tuple=True)[0].tolist() == list(range(lo, hi))
        assert ex["reference"] in split_sentences(STORIES[0])[1:]  # never the first sentence
        assert tokenizer.decode(ex["ids"][lo:hi].tolist()).strip() == ex["reference"]
    assert infill_example(tokenizer, 0, "Only one. And two.", torch.Generator()) is None


def test_evaluate_reports_every_metric(tmp_path, tiny_loaded):
    result = evaluate(tiny_loaded, data_dir=write_corpus(tmp_path), limit=2)
    assert result["n_examples"] == 2 and result["n_infill"] == 2 and result["seed"] == 0
    for key in ("ppl_base_ar", "ppl_a3_ar_order", "ppl_a3_random_s4"):
        assert result[key] > 1
    assert set(result["infill"]) == set(METHODS)
    for scores in result["infill"].values():
        assert set(scores) == {"rouge1", "rouge2", "rougeL"} and all(0 <= v <= 100 for v in scores.values())


def test_cli_prints_one_json_object_on_its_last_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "model.eval", "--json", "--model", "tiny", "--limit", "1",
                          "--data-dir", str(write_corpus(tmp_path)), "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model"] == "tiny" and "infill" in result and result["n_examples"] == 1


@pytest.mark.slow
def test_default_model_evaluates_on_a_story(tmp_path, default_model):
    result = evaluate(default_model, data_dir=write_corpus(tmp_path), limit=1)
    assert 1 < result["ppl_base_ar"] < 100  # SmolLM2 on simple English stories
    assert result["infill"]["ar_prefix"]["rouge1"] >= 0
