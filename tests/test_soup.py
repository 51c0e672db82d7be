"""model.train.soup: the base plus weighted moves of runs warm-started from it, tensor by tensor."""

import json

import pytest
import torch
from adapter_fixture import write_adapter
from safetensors.torch import load_file, save_file

from model.loading import apply_adapter, tiny_model
from model.train.export import FILES
from model.train.soup import main, make_soup, parse_part

VOCAB = 64


def adapter(directory, seed, **lora):
    write_adapter(directory, tiny_model(VOCAB, seed=0), seed=seed)
    if lora:  # another rank or target set: rewrite the config as peft would have written it
        config = json.loads((directory / "adapter_config.json").read_text())
        (directory / "adapter_config.json").write_text(json.dumps({**config, **lora}))
    return directory


def tensors(directory):
    return {name: load_file(directory / name) for name in FILES}


def test_a_soup_is_the_base_plus_the_weighted_moves(tmp_path):
    base, one, two = (adapter(tmp_path / n, seed) for n, seed in (("base", 0), ("one", 1), ("two", 2)))
    b, r1, r2 = tensors(base), tensors(one), tensors(two)

    make_soup(base, tmp_path / "same", [(one, 1.0)])  # all of one move: that run, exactly
    got = tensors(tmp_path / "same")
    assert all(torch.equal(got[f][k], r1[f][k]) for f in FILES for k in r1[f])

    report = make_soup(base, tmp_path / "mean", [(one, 0.5), (two, 0.5)])
    got = tensors(tmp_path / "mean")
    for f in FILES:
        for k, v in b[f].items():
            assert got[f][k].dtype == v.dtype
            assert torch.allclose(got[f][k], (r1[f][k] + r2[f][k]) / 2, atol=1e-6), k
    assert report["relative_change"]["adapter_model.safetensors"] > 0

    make_soup(base, tmp_path / "half", [(one, 0.5)])  # half the way from the base to one
    got = tensors(tmp_path / "half")
    k = next(k for k in b[FILES[0]] if "lora_B" in k)
    assert torch.allclose(got[FILES[0]][k], b[FILES[0]][k] + 0.5 * (r1[FILES[0]][k] - b[FILES[0]][k]), atol=1e-6)

    # the soup is an adapter like any other: it loads and runs, between its two runs
    ids = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(0))
    groups = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        out = [apply_adapter(tiny_model(VOCAB, seed=0), d)(ids, groups).logits for d in (one, tmp_path / "mean", two)]
    assert torch.isfinite(out[1]).all() and not torch.equal(out[1], out[0]) and not torch.equal(out[1], out[2])


def test_a_soup_keeps_the_base_storage_dtype(tmp_path):
    base, one = adapter(tmp_path / "base", 0), adapter(tmp_path / "one", 1)
    name = FILES[0]
    half = {k: v.half() for k, v in load_file(base / name).items()}
    save_file(half, base / name)  # a float16 base (as assets/ ships), float32 runs
    make_soup(base, tmp_path / "soup", [(one, 0.5)])
    got, run = load_file(tmp_path / "soup" / name), load_file(one / name)
    k = next(k for k in got if "lora_B" in k)
    assert got[k].dtype == torch.float16
    assert torch.allclose(got[k].float(), (half[k].float() + run[k]) / 2, atol=2e-3)


def test_a_soup_refuses_runs_of_another_kind(tmp_path):
    base = adapter(tmp_path / "base", 0)
    other = adapter(tmp_path / "other", 1, r=8)
    with pytest.raises(ValueError, match="adapter_config.json differs"):
        make_soup(base, tmp_path / "soup", [(other, 0.5)])
    scaled = adapter(tmp_path / "scaled", 1, alpha_pattern={"q_proj": 4})  # another scale for some layers
    with pytest.raises(ValueError, match="adapter_config.json differs"):
        make_soup(base, tmp_path / "soup", [(scaled, 0.5)])
    same = adapter(tmp_path / "same", 1, modules_to_save=[], base_model_name_or_path="elsewhere")  # = None
    make_soup(base, tmp_path / "fine", [(same, 0.5)])
    # tensors the base does not hold, or of another shape: refused, and nothing written
    def shorter(tensors):  # the first tensor one element short
        return {k: (v.reshape(-1)[1:] if i == 0 else v) for i, (k, v) in enumerate(tensors.items())}

    for what, change in (("missing", lambda t: dict(list(t.items())[1:])), ("shape", shorter)):
        odd = adapter(tmp_path / what, 1)
        save_file(change(load_file(odd / FILES[-1])), odd / FILES[-1])  # the last file: the first is fine
        with pytest.raises(ValueError, match="base's"):
            make_soup(base, tmp_path / f"soup-{what}", [(odd, 0.5)])
        assert not (tmp_path / f"soup-{what}").exists()
    # never over an input, never into a directory that holds something
    with pytest.raises(ValueError, match="the base or one of the runs"):
        make_soup(base, base, [(same, 0.5)])
    with pytest.raises(ValueError, match="the base or one of the runs"):
        make_soup(base, same, [(same, 0.5)])
    with pytest.raises(ValueError, match="not empty"):
        make_soup(base, tmp_path / "fine", [(same, 0.5)])
    with pytest.raises(ValueError, match="at least one run"):
        make_soup(base, tmp_path / "soup", [])
    with pytest.raises(FileNotFoundError, match="missing adapter_config.json"):
        make_soup(base, tmp_path / "soup", [(tmp_path / "nowhere", 0.5)])


def test_runs_are_written_dir_colon_weight(tmp_path, capsys):
    assert parse_part("runs/a:0.25") == (parse_part("runs/a")[0], 0.25) and parse_part("runs/a")[1] == 1.0
    with pytest.raises(ValueError, match="DIR:WEIGHT"):
        parse_part("runs/a:half")
    base, one = adapter(tmp_path / "base", 0), adapter(tmp_path / "one", 1)
    main([str(base), str(tmp_path / "soup"), f"{one}:0.5"])
    assert json.loads(capsys.readouterr().out)["runs"] == [[str(one), 0.5]]
    with pytest.raises(SystemExit):
        main([str(base), str(tmp_path / "soup"), f"{one}:half"])
    assert "DIR:WEIGHT" in capsys.readouterr().err
