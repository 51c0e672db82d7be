import json

import torch
from safetensors.torch import load_file
from stories_fixture import write_corpus

from model.loading import apply_adapter, tiny_model
from model.train import PRESETS, EpochOrder, TrainConfig, batch_groups, lr_at, pad_batch, stage_at, train


def test_curriculum_runs_the_stages_in_order_then_mixes():
    cfg = TrainConfig(max_steps=100, stages={"ar": 0.1, "block2": 0.1, "perm8": 0.2}, mix={"infill": 1.0})
    g = torch.Generator().manual_seed(0)
    stages = [stage_at(s, cfg, g) for s in range(100)]
    assert stages[:10] == ["ar"] * 10 and stages[10:20] == ["block2"] * 10 and stages[20:40] == ["perm8"] * 20
    assert set(stages[40:]) == {"infill"}


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == 1e-4 and abs(lr_at(9, cfg) - 1e-3) < 1e-12
    assert lr_at(50, cfg) < lr_at(20, cfg) and abs(lr_at(100, cfg) - 1e-4) < 1e-12


def test_epoch_order_is_seeded_and_visits_every_sequence_once_per_epoch():
    seqs = [[i] for i in range(7)]
    order = EpochOrder(seqs, seed=3, length=21)
    epochs = [[order[i][0] for i in range(e * 7, e * 7 + 7)] for e in range(3)]
    assert all(sorted(e) == list(range(7)) for e in epochs) and epochs[0] != epochs[1]
    assert [EpochOrder(seqs, 3, 21)[i] for i in range(21)] == [order[i] for i in range(21)]


def test_padding_is_never_visible_or_scored():
    batch = pad_batch([[1, 2, 3, 4], [5, 6]], pad_id=0)
    assert batch["labels"][1, 2:].tolist() == [-100, -100]
    groups = batch_groups(batch["attention_mask"], "perm4", torch.Generator().manual_seed(0))
    assert (groups[1, 2:] > groups[1, :2].max()).all()


def run_tiny(tmp_path, out, **overrides):
    cfg = TrainConfig(**{**PRESETS["tiny"], "data_dir": str(write_corpus(tmp_path / "corpus")), "out_dir": str(out),
                         **overrides})
    return train(cfg)


def test_tiny_training_run_logs_resumes_exactly_and_exports_a_loadable_adapter(tmp_path, tokenizer):
    straight = run_tiny(tmp_path, tmp_path / "straight")
    assert straight["finished"] and straight["step"] == PRESETS["tiny"]["max_steps"]
    log = [json.loads(line) for line in (tmp_path / "straight" / "loss_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses and all(0 < x < 20 for x in losses) and any("validation" in r for r in log)

    # the same run cut in two: stopped after 5 steps (as a wall-clock budget would), then resumed
    first = run_tiny(tmp_path, tmp_path / "split", stop_at_step=5)
    assert first["step"] == 5 and not first["finished"]
    assert json.loads((tmp_path / "split" / "checkpoint" / "trainer_state.json").read_text())["step"] == 5
    resumed = run_tiny(tmp_path, tmp_path / "split")
    assert resumed["finished"] and resumed["step"] == straight["step"]
    a = load_file(tmp_path / "straight" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "split" / "final" / "adapter_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    # the exported adapter merges into the base and reproduces the trained model
    merged = apply_adapter(tiny_model(len(tokenizer), seed=0), tmp_path / "straight" / "final")
    extra = load_file(tmp_path / "straight" / "final" / "a3_extra.safetensors")
    assert torch.equal(merged.model.query_embed.detach(), extra["model.query_embed"])
    assert not torch.equal(merged.model.query_embed.detach(), tiny_model(len(tokenizer), seed=0).model.query_embed)

    # the half-precision copy that ships in assets/ merges to (nearly) the same model
    from model.export import export_adapter

    report = export_adapter(tmp_path / "straight" / "final", tmp_path / "half")
    assert report["max_abs_error"] < 1e-2
    half_bytes = sum(report["bytes"].values())
    full_bytes = sum((tmp_path / "straight" / "final" / f).stat().st_size for f in report["bytes"])
    assert half_bytes < 0.6 * full_bytes
    assert load_file(tmp_path / "half" / "adapter_model.safetensors")[next(iter(a))].dtype == torch.float16
    half = apply_adapter(tiny_model(len(tokenizer), seed=0), tmp_path / "half")
    ids = torch.randint(0, len(tokenizer), (1, 12), generator=torch.Generator().manual_seed(0))
    groups = torch.arange(12).unsqueeze(0)
    with torch.no_grad():
        ref, got = merged(ids, groups).logits, half(ids, groups).logits
    assert got.dtype == torch.float32 and torch.allclose(ref, got, atol=5e-2)
