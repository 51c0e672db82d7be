import json

import pytest
import torch
from safetensors.torch import load_file
from stories_fixture import write_corpus

from model.loading import apply_adapter, tiny_model
from model.train.config import PRESETS, TrainConfig, lr_at, stage_at
from model.train.data import EpochOrder, pad_batch
from model.train.groupings import batch_groups
from model.train.loop import train


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
    from model.train.export import export_adapter

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


# --------------------------------------------------------------------------------------------------
# recipe v2: distillation to the base, the general corpus, short spans, warm starts


def test_distill_kl_compares_query_row_i_with_base_row_i_minus_1_and_skips_padding():
    from model.train.loop import distill_kl

    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 6, 11, generator=g)
    labels = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, -100, -100, -100]])
    student = torch.randn(2, 6, 11, generator=g)
    student[:, 1:] = teacher[:, :-1]  # the A3 query row i predicts what the base's row i-1 predicts
    student[1, 3:] = 100 * torch.randn(3, 11, generator=g)  # padding rows: anything
    assert float(distill_kl(student, teacher, labels)) < 1e-6
    student[0, 2] += torch.randn(11, generator=g)  # one real row off: a positive KL
    assert float(distill_kl(student, teacher, labels)) > 1e-3


def test_general_sequences_pack_whole_documents_from_every_source(tokenizer):
    from model.train.data import general_sequences

    cfg = TrainConfig(seq_len=64, limit_stories=300)
    packed = general_sequences(tokenizer, 0, "validation", cfg)
    assert packed and all(seq[0] == 0 and 2 < len(seq) <= 64 for seq in packed)
    assert sum(len(s) for s in packed) > 300 * 5  # about every document went in
    text = tokenizer.decode([t for s in packed for t in s[1:]])
    from model.data.general import read_general

    docs = read_general("validation")
    chosen = [d for d in docs if d["text"] in text]
    assert {d["source"] for d in chosen} == {"wordnet", "pydocs", "jargon"}  # shuffled before the limit


def test_span_groupings_open_one_short_run_after_the_start_token():
    from model.train.groupings import sample_groups, sample_span, sample_span_groups

    g = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(300):
        n = int(torch.randint(2, 80, (1,), generator=g))
        open_at = (~sample_span(n, g)).nonzero(as_tuple=True)[0].tolist()
        assert open_at and open_at[0] >= 1 and len(open_at) <= 16
        assert open_at == list(range(open_at[0], open_at[-1] + 1))  # one contiguous run
        lengths.add(len(open_at))
        groups = sample_span_groups(n, g)
        assert int(groups[0]) < int(groups[1:].min())  # the start token alone in the lowest group
    assert lengths == set(range(1, 17))
    assert sample_groups(10, "ar", g)[0].tolist()[1:] == list(range(9))


def test_sentence_spans_are_separate_runs_many_of_them_whole_sentences(tokenizer):
    from model.train.groupings import sample_sentence_spans, sentence_end_ids

    ends_of = sentence_end_ids(tokenizer)
    assert bool(ends_of[tokenizer(".", add_special_tokens=False).input_ids[0]])
    assert not bool(ends_of[tokenizer(" the", add_special_tokens=False).input_ids[0]])
    text = " ".join(f"Sentence number {w} is here." for w in ("one", "two", "three", "four", "five", "six", "seven"))
    ids = torch.tensor([0] + tokenizer(text, add_special_tokens=False).input_ids)
    ends = ends_of[ids]
    starts = {0, *(ends.nonzero(as_tuple=True)[0] + 1).tolist()}  # sentence starts
    g = torch.Generator().manual_seed(0)
    whole, fractions = 0, []
    for _ in range(200):
        given = sample_sentence_spans(ends, g)
        assert bool(given[0]) and not bool(given.all())
        opened = (~given).int()
        run_starts = ((opened[1:] == 1) & (opened[:-1] == 0)).nonzero(as_tuple=True)[0] + 1
        run_stops = ((opened[1:] == 0) & (opened[:-1] == 1)).nonzero(as_tuple=True)[0] + 1
        assert bool(given[-1]) and len(run_starts) == len(run_stops)  # every run ends before the last token
        for a, b in zip(run_starts.tolist(), run_stops.tolist(), strict=True):
            assert bool(given[a - 1]) and bool(given[b])  # given text on both sides of every run
        whole += sum(1 for a, b in zip(run_starts.tolist(), run_stops.tolist(), strict=True)
                     if a in starts and b in starts)
        fractions.append(float(opened.sum()) / (len(ids) - 1))
    assert whole > 50  # whole sentences are masked often (the evaluation's blank)
    assert min(fractions) > 0.1 and max(fractions) < 0.75


def test_sentence_stage_scores_only_the_open_positions(tokenizer):
    from model.plans import check_context
    from model.train.groupings import staged_batch

    seqs = [[0] + tokenizer("A cat sat. A dog ran. The sun was warm.", add_special_tokens=False).input_ids,
            [0] + tokenizer("Short one. Yes.", add_special_tokens=False).input_ids]
    batch = pad_batch(seqs, 0)
    from model.train.groupings import sentence_end_ids

    out = staged_batch(batch, "sentences", torch.Generator().manual_seed(3), sentence_end_ids(tokenizer))
    for b, seq in enumerate(seqs):
        n = len(seq)
        groups = out["group_ids"][b, :n]
        scored = (out["labels"][b, :n] != -100)
        given = ~scored
        check_context(given, groups)  # a valid plan: every open position sees something
        # the given positions come first (lower groups) and are not scored; the open ones are, with their tokens
        assert int(groups[given].max()) < int(groups[scored].min())
        assert out["labels"][b, :n][scored].tolist() == [seq[i] for i in scored.nonzero(as_tuple=True)[0].tolist()]
        assert bool((out["labels"][b, n:] == -100).all())
    plain = staged_batch(batch, "ar", torch.Generator().manual_seed(3), None)
    assert torch.equal(plain["labels"], batch["labels"])  # other stages score every position


@pytest.mark.parametrize("stage", ["whole_sentences", "whole_outside_in"])
def test_whole_sentence_stages_mask_whole_sentences_filled_in_their_order(tokenizer, stage):
    from model.plans import make_plan
    from model.train.groupings import WHOLE_SENTENCE_ORDERS, sentence_end_ids, staged_batch

    text = " ".join(f"Sentence number {w} is here." for w in ("one", "two", "three", "four", "five", "six"))
    seq = [0] + tokenizer(text, add_special_tokens=False).input_ids
    ends = sentence_end_ids(tokenizer)[torch.tensor(seq)]
    starts = {1, *(ends.nonzero(as_tuple=True)[0] + 1).tolist()}  # where each sentence begins
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        out = staged_batch(pad_batch([seq], 0), stage, g, sentence_end_ids(tokenizer))
        groups, scored = out["group_ids"][0], out["labels"][0] != -100
        opened = scored.int()
        run_starts = ((opened[1:] == 1) & (opened[:-1] == 0)).nonzero(as_tuple=True)[0] + 1
        run_stops = ((opened[1:] == 0) & (opened[:-1] == 1)).nonzero(as_tuple=True)[0] + 1
        assert len(run_starts) >= 1 and bool(~scored[-1])
        for a, b in zip(run_starts.tolist(), run_stops.tolist(), strict=True):
            assert a in starts and b in starts  # exactly a whole sentence (or several in a row)
        open_groups = groups[scored]
        assert len(set(open_groups.tolist())) == len(open_groups)  # one token per group
        assert int(groups[~scored].max()) < int(open_groups.min())  # after all the given text
        # the open tokens come in the stage's order: the plan decoder's order for the same blanks
        plan = make_plan(torch.tensor(seq), given=~scored, order=WHOLE_SENTENCE_ORDERS[stage])
        order = torch.argsort(groups[scored]).tolist()
        assert order == torch.argsort(plan.group_ids[scored]).tolist()
        if stage == "whole_outside_in":  # each run's two ends come before its inside
            for a, b in zip(run_starts.tolist(), run_stops.tolist(), strict=True):
                if b - a >= 3:
                    assert max(groups[a], groups[b - 1]) < int(groups[a + 1 : b - 1].min())


def test_warm_start_reproduces_the_adapter_and_refuses_a_mismatch(tmp_path, tokenizer):
    from model.train.adapters import build_model, load_adapter_weights

    run_tiny(tmp_path, tmp_path / "first", max_steps=3, eval_every=100, save_every=100)
    final = tmp_path / "first" / "final"
    cfg = TrainConfig(**{**PRESETS["tiny"], "init_adapter": str(final)})
    warm, _, _ = build_model(cfg)
    trained = apply_adapter(tiny_model(len(tokenizer), seed=0), final)
    ids = torch.randint(0, len(tokenizer), (1, 10), generator=torch.Generator().manual_seed(1))
    groups = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(warm(ids, group_ids=groups).logits, trained(ids, group_ids=groups).logits, atol=1e-5)
    other, _, _ = build_model(TrainConfig(**{**PRESETS["tiny"], "lora_alpha": 64}))
    with pytest.raises(ValueError, match="lora_alpha"):
        load_adapter_weights(other, final)
    with pytest.raises(ValueError, match="unknown curriculum stages"):
        run_tiny(tmp_path, tmp_path / "bad", mix={"spam": 1.0})
