"""bench.startup: a real `python app.py` started and asked one /infill (the tiny model); only the shape of
its report and the order of its times are checked, never their size."""

import json

import pytest

from bench.startup import main


def test_startup_reports_serving_then_a_filled_answer(capsys):
    main(["--json", "--model", "tiny", "--runs", "1", "--threads", "1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (run,) = result["runs"]
    assert 0 < run["serving_s"] <= run["first_answer_s"] == result["first_answer_s"]["first"]
    assert result["model"] == "tiny" and result["threads"] == 1 and result["warm_cache"] is None


def test_startup_refuses_zero_runs(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--runs", "0"])
    assert err.value.code == 2 and "--runs must be at least 1" in capsys.readouterr().err
