"""Adapt a pretrained LLaMA-family model to A3 with the paper's progressive curriculum.

    python -m model.train --preset tiny                        # seconds on a CPU: the smoke test
    python -m model.train --preset cpu --max-minutes 60        # resumable: run it again to continue
    python -m model.train --preset gpu --max-minutes 60        # on a GPU; resumable: run again until done
    accelerate launch --num_processes 8 -m model.train --preset gpu     # several GPUs / machines

Reads top to bottom: config -> setup (model, adapters, data) -> one loop -> export. Everything A3-
specific is a pure function elsewhere: the group sampler (model.plans.sample_training_groups), the
loss (model.modeling.a3_loss). accelerate appears only here.

Curriculum (one grouping per sequence): left to right -> contiguous groups of 2 -> of 4 -> random
groups of 4 in random order -> of 8, then a mix of all of them with infill-shaped plans (a given
prefix and suffix, an open middle span in a random order) and short spans (1-16 tokens anywhere,
both sides given). Trainable: LoRA adapters on every linear layer, plus the query vector and the
RMSNorm weights.

Keeping the base's general ability (recipe v2): `--general true` adds the human-written general corpus
(assets/general, packed into sequences) to the stories, and `--distill-weight w` adds w * KL(base ||
A3) on left-to-right batches: under left-to-right grouping the A3 query stream predicts exactly what
the base AR model predicts, so the base is the teacher there. `--init-adapter DIR` warm-starts from
a trained adapter (e.g. the shipped one).

A checkpoint (adapter + optimizer state, safetensors + JSON, no pickle) is written every
`save_every` steps and when the wall-clock budget runs out; the next run resumes from it exactly.
At the end `<out-dir>/final` holds the adapter that `load_model` reads (copy it to assets/a3-smollm2-135m).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from model.train.adapters import build_model, build_teacher, load_checkpoint, save_adapter, save_checkpoint
from model.train.config import PRESETS, TrainConfig, lr_at, stage_at
from model.train.data import EpochOrder, general_sequences, load_sequences, pad_batch
from model.train.groupings import SENTENCE_STAGES, STAGES, sentence_end_ids, staged_batch


def distill_kl(query_logits: torch.Tensor, teacher_content_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) per scored token, for a left-to-right batch: the base's content row
    i-1 and the A3 query row i both predict token i (positions 1..L-1 where labels are real)."""
    keep = labels[:, 1:] != -100  # (B, L-1)
    student = query_logits[:, 1:][keep].float().log_softmax(-1)
    teacher = teacher_content_logits[:, :-1][keep].float().log_softmax(-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    return kl.mean() if kl.numel() else query_logits.sum() * 0.0


# --------------------------------------------------------------------------------------------------
# evaluation during training


@torch.no_grad()
def validation_loss(model, batches: list[dict], stage: str, seed: int, device,
                    end_ids: torch.Tensor | None = None) -> float:
    model.eval()
    g = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for batch in batches:
        inputs = staged_batch({k: v.to(device) for k, v in batch.items()}, stage, g, end_ids)
        out = model(**inputs)
        total += float(out.loss) * int(out.n_scored)
        count += int(out.n_scored)
    model.train()
    return total / max(count, 1)


# --------------------------------------------------------------------------------------------------
# the run


def train(cfg: TrainConfig) -> dict:
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    unknown = (set(cfg.stages) | set(cfg.mix)) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown curriculum stages {sorted(unknown)}; choose from {STAGES}.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start_time = time.time()
    deadline = start_time + 60 * cfg.max_minutes if cfg.max_minutes else None
    cuda = torch.cuda.is_available()
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if cuda else "no")
    accelerator = Accelerator(mixed_precision="no" if precision == "fp32" else precision,
                              gradient_accumulation_steps=cfg.grad_accum, cpu=not cuda)
    torch.manual_seed(cfg.seed)
    out_dir = Path(cfg.out_dir)

    # setup: model with adapters, optimizer, data
    model, tokenizer, start_id = build_model(cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    step, tokens_seen = 0, 0
    if (out_dir / "checkpoint" / "trainer_state.json").is_file():
        step, tokens_seen = load_checkpoint(model, optimizer, out_dir / "checkpoint")
        accelerator.print(f"resumed from {out_dir / 'checkpoint'} at step {step}")
    teacher = build_teacher(cfg).to(accelerator.device) if cfg.distill_weight > 0 else None
    train_seqs = load_sequences(tokenizer, start_id, "train", cfg)
    val_seqs = load_sequences(tokenizer, start_id, "validation", dataclasses.replace(cfg, general=False))
    general_val = (general_sequences(tokenizer, start_id, "validation", cfg) if cfg.general else [])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start_id
    uses_sentences = bool(set(SENTENCE_STAGES) & (set(cfg.stages) | {k for k, v in cfg.mix.items() if v > 0}))
    end_ids = sentence_end_ids(tokenizer) if uses_sentences else None
    global_batch = cfg.batch_size * accelerator.num_processes
    dataset = EpochOrder(train_seqs, cfg.seed, cfg.max_steps * cfg.grad_accum * global_batch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False,
                                         collate_fn=lambda seqs: pad_batch(seqs, pad_id))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if step:
        loader = accelerator.skip_first_batches(loader, step * cfg.grad_accum)
    def first_batches(seqs):
        return [pad_batch(seqs[i : i + cfg.batch_size], pad_id)
                for i in range(0, min(len(seqs), cfg.eval_batches * cfg.batch_size), cfg.batch_size)]

    val_batches, general_val_batches = first_batches(val_seqs), first_batches(general_val)

    # the loop
    log_file = out_dir / "loss_log.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not accelerator.is_main_process, desc="A3 train")
    model.train()
    batches = iter(loader)
    running, stage = [], "ar"
    while step < cfg.max_steps:
        if (deadline and time.time() > deadline) or (cfg.stop_at_step is not None and step >= cfg.stop_at_step):
            break
        rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 97 + accelerator.process_index)
        stage = stage_at(step, cfg, rng)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        for _ in range(cfg.grad_accum):
            batch = next(batches)
            inputs = staged_batch(batch, stage, rng, end_ids)
            with accelerator.accumulate(model):
                out = model(**inputs)
                loss = out.loss
                if teacher is not None and stage == "ar":
                    with torch.no_grad(), accelerator.autocast():
                        teacher_logits = teacher(batch["input_ids"], attention_mask=batch["attention_mask"],
                                                 return_content_logits=True).content_logits
                    loss = loss + cfg.distill_weight * distill_kl(out.logits, teacher_logits, batch["labels"])
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad()
            tokens_seen += int(accelerator.gather(batch["attention_mask"].sum()).sum())
            running.append(float(loss.detach()))
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            loss = sum(running) / len(running)
            running = []
            bar.set_postfix(loss=f"{loss:.3f}", stage=stage)
            if accelerator.is_main_process:
                with log_file.open("a") as fh:
                    fh.write(json.dumps({"step": step, "stage": stage, "loss": round(loss, 4),
                                         "lr": lr_at(step - 1, cfg), "tokens": tokens_seen,
                                         "minutes": round((time.time() - start_time) / 60, 2)}) + "\n")
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            val_stages = ("ar", "perm4", "infill", "span") + (SENTENCE_STAGES if end_ids is not None else ())
            val = {s: validation_loss(model, val_batches, s, cfg.seed, accelerator.device, end_ids)
                   for s in val_stages}
            if general_val_batches:
                val.update({f"general_{s}": validation_loss(model, general_val_batches, s, cfg.seed,
                                                            accelerator.device, end_ids)
                            for s in ("ar", "span") + (("sentences",) if end_ids is not None else ())})
            if accelerator.is_main_process:
                with log_file.open("a") as fh:
                    fh.write(json.dumps({"step": step, "validation": val}) + "\n")
                bar.write(f"step {step}: validation " + ", ".join(f"{k} {v:.3f}" for k, v in val.items()))
        if accelerator.is_main_process and (step % cfg.save_every == 0 or step == cfg.max_steps):
            save_checkpoint(accelerator.unwrap_model(model), optimizer, step, tokens_seen, cfg, out_dir / "checkpoint")
    bar.close()
    accelerator.wait_for_everyone()
    finished = step >= cfg.max_steps
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_checkpoint(unwrapped, optimizer, step, tokens_seen, cfg, out_dir / "checkpoint")
        if finished:
            save_adapter(unwrapped, out_dir / "final")
    summary = {"step": step, "max_steps": cfg.max_steps, "finished": finished, "tokens_seen": tokens_seen,
               "minutes": round((time.time() - start_time) / 60, 2), "out_dir": str(out_dir),
               "processes": accelerator.num_processes, "precision": precision}
    accelerator.print(json.dumps(summary))
    return summary


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    ap = argparse.ArgumentParser(prog="python -m model.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
    defaults = TrainConfig()
    optional_types = {"data_dir": str, "max_minutes": float, "limit_stories": int, "threads": int,
                      "stop_at_step": int, "general_dir": str, "init_adapter": str,
                      "general": lambda text: text.strip().lower() in ("1", "true", "yes", "on")}
    for f in dataclasses.fields(TrainConfig):
        flag, default = f"--{f.name.replace('_', '-')}", getattr(defaults, f.name)
        if isinstance(default, dict):
            ap.add_argument(flag, type=json.loads, default=None, help=f"JSON, e.g. '{json.dumps(default)}'")
        else:
            ap.add_argument(flag, type=optional_types.get(f.name, type(default)), default=None,
                            help=f"default {default!r}")
    args = vars(ap.parse_args(argv))
    preset = PRESETS[args.pop("preset")] if args.get("preset") else {}
    args.pop("preset", None)
    overrides = {k: v for k, v in args.items() if v is not None}
    return TrainConfig(**{**preset, **overrides})


if __name__ == "__main__":
    train(parse_args())
