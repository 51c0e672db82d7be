"""Every benchmark's command line parses, offers only the flags it honours, and refuses what it cannot do."""

import importlib

import pytest
import torch

BENCHES = ["app", "decode", "diffusion", "orders", "playback", "precision", "roofline", "screenshot"]


@pytest.mark.parametrize("name", BENCHES)
def test_every_benchmark_prints_its_help(name, capsys):
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "--json" in capsys.readouterr().out or name == "screenshot"


@pytest.mark.parametrize("name", ["diffusion", "orders", "playback"])
def test_a_benchmark_that_runs_on_the_cpu_only_refuses_device_flags(name, capsys):
    module = importlib.import_module(f"bench.{name}")
    for flag in (["--device", "cuda"], ["--dtype", "bfloat16"]):
        with pytest.raises(SystemExit) as exit_:
            module.main(flag)
        assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["app", "decode", "precision"])
def test_bad_numbers_and_a_missing_gpu_get_a_clear_message(name, capsys):
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--threads", "0"])
    assert exit_.value.code == 2 and "at least 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            module.main(["--device", "cuda", "--model", "tiny"])


def test_precision_has_no_dtype_flag_because_it_compares_both(capsys):
    from bench import precision

    with pytest.raises(SystemExit):
        precision.main(["--dtype", "float32"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_roofline_runs_on_the_cpu_only_and_refuses_bad_sizes(capsys):
    from bench import roofline

    with pytest.raises(SystemExit) as exit_:
        roofline.main(["--device", "cuda"])
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    for flag, message in ((["--mb", "0"], "more than 0 MB"), (["--mb", "lots"], "a number of MB"),
                          (["--repeats", "0"], "at least 1"), (["--threads", "0"], "at least 1")):
        with pytest.raises(SystemExit) as exit_:
            roofline.main(flag)
        assert exit_.value.code == 2 and message in capsys.readouterr().err, flag


@pytest.mark.parametrize("name", ["app", "decode"])
def test_the_roofline_bandwidth_array_is_a_flag_of_app_and_decode(name, capsys):
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert "--bandwidth-mb" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        module.main(["--bandwidth-mb", "-5"])
    assert exit_.value.code == 2 and "more than 0 MB" in capsys.readouterr().err


def test_the_diffusion_benchmark_times_both_ways_on_the_same_blanks(capsys):
    """Numbers, not assertions about them: it runs on the tiny model, the fills agree, and bad input says so."""
    import json

    from bench import diffusion

    diffusion.main(["--model", "tiny", "--blanks", "2", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # whether the fills agree is reported, not asserted: the tiny model's near-uniform scores tie within float
    # rounding, so its fills may differ by kernel (the real model's agree: tests/test_decoding.py)
    assert result["blanks"] == 2 and isinstance(result["same_fills"], bool) and result["given_grouping"] == "causal"
    assert result["cached_s"] > 0 and result["recompute_s"] > 0 and result["open_tokens"] > 0
    with pytest.raises(SystemExit) as exit_:
        diffusion.main(["--blanks", "0"])
    assert exit_.value.code == 2 and "at least 1" in capsys.readouterr().err
