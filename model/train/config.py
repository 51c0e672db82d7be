"""The trainer's configuration: `TrainConfig` (hyperparameters only), the presets, the schedule.

A preset is a starting point; any field can be overridden on the command line (model.train.loop).
"""


from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# --------------------------------------------------------------------------------------------------
# config


@dataclass
class TrainConfig:
    base: str = "default"  # "default" (SmolLM2-135M) or "tiny" (random, for tests)
    data_dir: str | None = None  # a corpus directory (train/validation.jsonl.gz); None = assets/stories
    out_dir: str = "runs/a3-train"
    seq_len: int = 256
    batch_size: int = 16  # per process, per micro-step
    grad_accum: int = 1
    max_steps: int = 3000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lora_rank: int = 16
    lora_alpha: int = 32
    # fractions of max_steps for each curriculum stage; the rest is the final mix
    stages: dict = field(default_factory=lambda: {"ar": 0.08, "block2": 0.06, "block4": 0.06, "perm4": 0.12,
                                                   "perm8": 0.12})
    mix: dict = field(default_factory=lambda: {"ar": 0.1, "block4": 0.1, "perm4": 0.15, "perm8": 0.3,
                                               "infill": 0.35})
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU | fp32 | bf16
    eval_every: int = 250
    eval_batches: int = 4
    save_every: int = 100
    log_every: int = 10
    max_minutes: float | None = None
    stop_at_step: int | None = None  # stop (with a checkpoint) at this step, as a budget would
    seed: int = 0
    limit_stories: int | None = None
    threads: int | None = None  # CPU threads for torch (None: torch's default)
    general: bool = False  # add the general corpus (assets/general) to the stories, packed to seq_len
    general_dir: str | None = None  # a general corpus directory; None = assets/general
    distill_weight: float = 0.0  # weight of KL(base || A3) on left-to-right batches
    init_adapter: str | None = None  # warm start: an adapter directory (weights only, no optimizer)


# recipe v3 on a CPU: warm start from v2; most batches mask whole sentences and short runs with
# text on both sides and score only them (the evaluation's infill shape); distillation on the
# left-to-right batches keeps general text; random groups of 4 keep any-order likelihoods
_CPU_V3 = dict(seq_len=256, batch_size=8, max_steps=40, warmup_steps=2, lr=2e-4, eval_every=20, eval_batches=2,
               save_every=5, log_every=5, precision="fp32", general=True, distill_weight=1.0,
               init_adapter="assets/a3-smollm2-135m", stages={}, mix={"ar": 0.25, "perm4": 0.15, "sentences": 0.6})

PRESETS = {
    "tiny": dict(base="tiny", seq_len=64, batch_size=4, max_steps=12, warmup_steps=2, eval_every=6,
                 eval_batches=1, save_every=5, log_every=2, lora_rank=4, lora_alpha=8, limit_stories=64),
    "cpu": dict(seq_len=256, batch_size=8, max_steps=2400, warmup_steps=40, eval_every=200, eval_batches=2,
                save_every=25, log_every=5, precision="bf16"),
    "gpu": dict(seq_len=256, batch_size=64, max_steps=4000, warmup_steps=100, eval_every=250, save_every=250),
    # recipe v2 on a CPU: warm start from the shipped adapter, stories + general text, distillation
    # to the base on left-to-right batches, many short infill spans; no fixed stages (already done)
    # (fp32: on this CPU bf16 autocast makes the backward pass ~25x slower, a slow bf16 matmul path)
    "cpu-v2": dict(seq_len=256, batch_size=8, max_steps=60, warmup_steps=4, lr=2e-4, eval_every=30,
                   eval_batches=2, save_every=5, log_every=5, precision="fp32", general=True,
                   distill_weight=1.0, init_adapter="assets/a3-smollm2-135m", stages={},
                   mix={"ar": 0.4, "infill": 0.2, "span": 0.4}),
    "cpu-v3": _CPU_V3,  # recipe v3 (see above)
    # recipe v4 on a CPU (v7): as v3, plus whole sentences filled left to right one token at a time (the
    # evaluation's a3_plan); warm start from the best adapter so far
    "cpu-v4": {**_CPU_V3, "max_steps": 80, "eval_every": 40,
               "mix": {"ar": 0.2, "perm4": 0.15, "sentences": 0.25, "whole_sentences": 0.4}},
    # recipe v5 on a CPU: as v4, with whole sentences also filled outside-in (the blank's two ends
    # first, then inwards: `a3_outside_in` in the evaluation)
    "cpu-v5": {**_CPU_V3, "max_steps": 80, "eval_every": 40,
               "mix": {"ar": 0.2, "perm4": 0.15, "sentences": 0.2, "whole_sentences": 0.2,
                       "whole_outside_in": 0.25}},
    "gpu-v2": dict(seq_len=256, batch_size=64, max_steps=3000, warmup_steps=100, eval_every=250,
                   save_every=250, general=True, distill_weight=1.0,
                   mix={"ar": 0.2, "block4": 0.05, "perm4": 0.15, "perm8": 0.1, "infill": 0.1, "span": 0.1,
                        "sentences": 0.1, "whole_sentences": 0.1, "whole_outside_in": 0.1}),
}


def stage_at(step: int, cfg: TrainConfig, generator: torch.Generator) -> str:
    """The curriculum stage of a step: the fixed stages in order, then a draw from the mix."""
    edge = 0.0
    for stage, fraction in cfg.stages.items():
        edge += fraction
        if step < edge * cfg.max_steps:
            return stage
    names, weights = list(cfg.mix), torch.tensor(list(cfg.mix.values()), dtype=torch.float)
    return names[int(torch.multinomial(weights, 1, generator=generator))]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """1) linear warmup, 2) cosine decay to min_lr_ratio * lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


