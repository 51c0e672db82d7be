"""model.eval.report: the README's one table and the docs' paired and target tables, read back against
the run they print."""

import json

import pytest
from test_eval_targets import _run

from model.eval.report import main, one_table, paired_table, targets_table


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines()[3:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_one_table_shows_every_measure_of_every_method_on_both_splits():
    run = _run(1.0)
    run["general"]["infill"] = {k: dict(v) for k, v in run["infill"].items()}
    run["general"]["infill"]["a3_plan"]["rougeL"] = 33.25
    for block in (run["infill"], run["general"]["infill"]):
        for row in block.values():
            row.setdefault("suffix_nll", 2.5)
            row.setdefault("text_nll", 2.25)
    rows = _rows(one_table(run))
    assert set(rows) == {"A3 best of N", "A3 left to right", "A3 dynamic (the page's default)", "diffusion",
                         "AR from the prefix", "the original text"}
    plan = rows["A3 left to right"]
    assert plan[0] == f"{run['infill']['a3_plan']['rougeL']:.2f}" and plan[4] == "33.25"
    assert plan[3] == "3.0" and rows["the original text"][0] == "–" and rows["the original text"][3] == "4.0"
    assert plan[1] == "2.500" and plan[2] == "2.250"


def test_paired_and_targets_tables_read_the_run():
    run = _run(1.0)
    run["infill_paired"] = {"a3_dynamic-ar_prefix": {"rougeL": {"mean": 1.0, "ci95": [0.5, 1.5]},
                                                     "suffix_nll": {"mean": -0.1, "ci95": [-0.2, -0.05]}}}
    paired = paired_table(run)
    assert "| stories | A3 dynamic − AR from the prefix | +1.000 [+0.500, +1.500] | -0.100 [-0.200, -0.050] | – |" \
        in paired
    targets = targets_table(run)
    lines = {line.split("|")[1].strip(): line for line in targets.splitlines() if line.startswith("| A3")}
    assert lines["A3 dynamic"].endswith("| yes |") and lines["A3 left to right"].endswith("| **no** |")
    assert "Random groups of 4: 6.0 times the left-to-right perplexity (target ≤ 5: **no**)" in targets
    assert "targets may be read from it" in targets
    del run["ppl_a3_ar_order"], run["options"]
    targets = targets_table(run)
    assert "story perplexity left to right not measured" in targets and "no target is read from it" in targets


def test_cli_prints_the_tables_and_refuses_a_bad_file(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text("[eval] progress\n" + json.dumps(_run(1.0)) + "\n")
    main([str(path), "--full"])
    out = capsys.readouterr().out
    assert out.count("| method |") == 1 and "| decoder |" in out
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "bad.json")])
    assert err.value.code == 2


def test_the_report_says_whether_the_repeats_were_held_down_by_the_rule():
    from model.eval.report import rule_note

    assert "model's own" in rule_note({"options": {}}) and "model's own" in rule_note({})
    said = rule_note({"options": {"no_repeat": 3}})
    assert "n = 3" in said and "by construction" in said
    assert "version 1" in said  # a run that did not record its rule was decoded under version 1
    assert "earlier version" in rule_note({"options": {"no_repeat": 3, "rule": "forms, window 24"}})
    from model.repeats import RULE

    said = rule_note({"options": {"no_repeat": 3, "rule": RULE}})
    assert "within 64 tokens" in said and "earlier" not in said
