"""Adapt a pretrained LLaMA-family model to A3 with the paper's progressive curriculum.

    python -m model.train --preset tiny                        # seconds on a CPU: the smoke test
    python -m model.train --preset cpu --max-minutes 60        # resumable: run it again to continue
    python -m model.train --preset gpu --max-minutes 9         # one H100 call; repeat until done
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
At the end `OUT/final` holds the adapter that `load_model` reads (copy it to assets/a3-smollm2-135m).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.plans import CURRICULUM, make_plan, sample_training_groups

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


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


# --------------------------------------------------------------------------------------------------
# data


def load_sequences(tokenizer, start_token_id: int, split: str, cfg: TrainConfig) -> list[list[int]]:
    """Stories as token ids: start token + story, cut to seq_len; plus the packed general corpus."""
    from model.stories import read_stories

    directory = Path(cfg.data_dir) if cfg.data_dir else None
    stories = read_stories(split, directory, limit=cfg.limit_stories)
    ids = tokenizer([s["text"] for s in stories], add_special_tokens=False).input_ids
    sequences = [[start_token_id] + seq[: cfg.seq_len - 1] for seq in ids if seq]
    if cfg.general:
        sequences += general_sequences(tokenizer, start_token_id, split, cfg)
    return sequences


def general_sequences(tokenizer, start_token_id: int, split: str, cfg: TrainConfig) -> list[list[int]]:
    """The general corpus packed into sequences: documents in a seeded order, each sequence a start
    token and whole documents joined by a newline, up to seq_len (a longer document is cut)."""
    from model.general import read_general

    directory = Path(cfg.general_dir) if cfg.general_dir else None
    docs = read_general(split, directory)  # the file is grouped by source: shuffle before any limit
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    order = order[: cfg.limit_stories] if cfg.limit_stories is not None else order
    ids = tokenizer([docs[i]["text"] for i in order], add_special_tokens=False).input_ids
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    packed, current = [], [start_token_id]
    for doc in ids:
        piece = (newline if len(current) > 1 else []) + doc
        if len(current) > 1 and len(current) + len(piece) > cfg.seq_len:
            packed.append(current)
            current, piece = [start_token_id], doc
        current += piece[: cfg.seq_len - len(current)]
    if len(current) > 1:
        packed.append(current)
    return packed


class EpochOrder(torch.utils.data.Dataset):
    """An endless concatenation of seeded permutations of the sequences (index -> sequence), so the
    order is a pure function of (seed, index) and resuming is skipping indices."""

    def __init__(self, sequences: list[list[int]], seed: int, length: int):
        self.sequences, self.seed, self.length = sequences, seed, length
        self._perms: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> list[int]:
        epoch, offset = divmod(index, len(self.sequences))
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perms = {epoch: torch.randperm(len(self.sequences), generator=g).tolist()}
        return self.sequences[self._perms[epoch][offset]]


def pad_batch(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


STAGES = (*CURRICULUM, "span", "sentences", "whole_sentences", "whole_outside_in")
# stages whose loss scores only the open positions (the given ones are context, as at inference)
FOCUS_STAGES = ("sentences", "whole_sentences", "whole_outside_in")
# the whole-sentence stages and the one order each fills its sentences in (one token per group)
WHOLE_SENTENCE_ORDERS = {"whole_sentences": "left_to_right", "whole_outside_in": "outside_in"}
SENTENCE_STAGES = FOCUS_STAGES  # stages that need the sentence-ending tokens


def sample_span_groups(length: int, generator: torch.Generator | None = None, max_span: int = 16) -> torch.Tensor:
    """A short-span infill grouping: 1..max_span open tokens anywhere after the start token, the rest
    given (left to right); the span decoded left to right (half the time) or in a random or
    outside-in order, one token per group half the time. This is the shape of a blank in the app
    and in the evaluation, where the plan decoder fills it left to right with both sides given."""
    given = sample_span(length, generator, max_span)
    return _open_order_groups(given, generator)


def _open_order_groups(given: torch.Tensor, generator: torch.Generator | None,
                       fixed_order: str | None = None) -> torch.Tensor:
    """Given positions left to right, then the open ones: left to right half the time, else random or
    outside-in; one token per group half the time, else groups of 2 or 4. fixed_order: always that
    order, one token per group (left_to_right: the evaluation's `a3_plan`; outside_in: its `a3_outside_in`)."""
    if fixed_order is not None:
        return make_plan(torch.zeros(given.numel(), dtype=torch.long), given=given, order=fixed_order).group_ids
    r = float(torch.rand(1, generator=generator))
    order = "left_to_right" if r < 0.5 else ("random" if r < 0.75 else "outside_in")
    size = 1 if float(torch.rand(1, generator=generator)) < 0.5 else (2, 4)[int(torch.randint(0, 2, (1,),
                                                                                  generator=generator))]
    plan = make_plan(torch.zeros(given.numel(), dtype=torch.long), given=given, order=order, group_size=size,
                     generator=generator)
    return plan.group_ids


def sample_span(length: int, generator: torch.Generator | None = None, max_span: int = 16) -> torch.Tensor:
    """A given mask (L,) with one open run of 1..max_span tokens anywhere after the start token."""
    n = length - 1
    span = int(torch.randint(1, min(max_span, n) + 1, (1,), generator=generator))
    start = 1 + int(torch.randint(0, n - span + 1, (1,), generator=generator))
    given = torch.ones(length, dtype=torch.bool)
    given[start : start + span] = False
    return given


def sentence_end_ids(tokenizer) -> torch.Tensor:
    """(V,) bool: the tokens that end a sentence (their text ends in . ! or ?, maybe with a quote)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return torch.tensor([t.rstrip().rstrip("\"'”").endswith((".", "!", "?")) for t in texts])


def sample_sentence_spans(ends: torch.Tensor, generator: torch.Generator | None = None,
                          fraction: tuple[float, float] = (0.15, 0.5), max_span: int = 40,
                          whole: bool = False) -> torch.Tensor:
    """A given mask (L,) with several open runs covering about a `fraction` of positions 1..L-1 (a last
    whole sentence may overshoot it): half the attempts place a whole sentence (after a sentence end up to
    the next one, as the evaluation masks them), the others a random run of 2..24 tokens. Runs never touch
    and the last token stays given, so every run has given text on both sides.
    whole: every run is a whole sentence with text after it (random runs only where there is none).

    ends: (L,) bool, True where the token ends a sentence."""
    length = ends.numel()
    n = length - 1
    given = torch.ones(length, dtype=torch.bool)
    if n < 3:  # too short for text on both sides: one open token after the start
        given[1] = False
        return given
    stops = ends.nonzero(as_tuple=True)[0].tolist()
    starts = [0, *stops[:-1]] if stops else []  # the token before each sentence
    sentences = [(a + 1, b + 1) for a, b in zip(starts, stops, strict=True) if 1 <= b - a <= max_span]
    if whole:
        sentences = [(a, b) for a, b in sentences if b <= length - 1]
    sentence_share = 1.0 if whole else 0.5
    lo, hi = fraction
    target = max(1, int(n * (lo + (hi - lo) * float(torch.rand(1, generator=generator)))))
    for _ in range(64):
        if int((~given).sum()) >= target:
            break
        if sentences and float(torch.rand(1, generator=generator)) < sentence_share:
            start, stop = sentences[int(torch.randint(0, len(sentences), (1,), generator=generator))]
        else:
            span = int(torch.randint(2, min(24, n) + 1, (1,), generator=generator))
            start = 1 + int(torch.randint(0, n - span + 1, (1,), generator=generator))
            stop = start + span
        stop = min(stop, length - 1)  # the last token stays given: every run has text after it
        # keep one given token between runs (and after the start token)
        if stop <= start or bool((~given[start - 1 : stop + 1]).any()):
            continue
        given[start:stop] = False
    if bool(given[1:].all()):
        given[1 + int(torch.randint(0, n - 1, (1,), generator=generator))] = False
    return given


def sample_groups(length: int, stage: str, generator: torch.Generator | None = None,
                  ends: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(group ids (L,), open mask (L,) or None): the open positions are returned for the stages that
    score only them (FOCUS_STAGES)."""
    if stage == "span":
        return sample_span_groups(length, generator), None
    if stage in SENTENCE_STAGES:
        # whole_sentences / whole_outside_in: only whole sentences, each filled one token at a time,
        # left to right / outside-in
        order = WHOLE_SENTENCE_ORDERS.get(stage)
        ends = ends if ends is not None else torch.zeros(length, dtype=torch.bool)
        given = sample_sentence_spans(ends[:length], generator, whole=order is not None)
        return _open_order_groups(given, generator, fixed_order=order), ~given
    return sample_training_groups(length, stage, generator), None


def batch_plan(attention_mask: torch.Tensor, stage: str, generator: torch.Generator,
               ends: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One grouping per sequence, over its real tokens; padding gets the largest group (never seen).
    Returns (groups (B, L), the positions to score (B, L) for a focus stage, else None).
    ends: (B, L) bool, the sentence-ending tokens (for the sentence stage)."""
    B, L = attention_mask.shape
    groups = torch.full((B, L), L + 1, dtype=torch.long)
    targets = torch.zeros((B, L), dtype=torch.bool) if stage in FOCUS_STAGES else None
    for b in range(B):
        n = int(attention_mask[b].sum())
        groups[b, :n], open_ = sample_groups(n, stage, generator, None if ends is None else ends[b, :n])
        if targets is not None:
            targets[b, :n] = open_
    return groups, targets


def batch_groups(attention_mask: torch.Tensor, stage: str, generator: torch.Generator,
                 ends: torch.Tensor | None = None) -> torch.Tensor:
    return batch_plan(attention_mask, stage, generator, ends)[0]


def staged_batch(batch: dict, stage: str, generator: torch.Generator, end_ids: torch.Tensor | None) -> dict:
    """The model's inputs for one stage: group ids added; in a focus stage the given labels are -100."""
    mask = batch["attention_mask"].cpu()
    ends = end_ids[batch["input_ids"].cpu()] if end_ids is not None else None
    groups, targets = batch_plan(mask, stage, generator, ends)
    device = batch["input_ids"].device
    out = {**batch, "group_ids": groups.to(device)}
    if targets is not None:
        out["labels"] = batch["labels"].masked_fill(~targets.to(device), -100)
    return out


def distill_kl(query_logits: torch.Tensor, teacher_content_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) per scored token, for a left-to-right batch: the base's content row
    i-1 and the A3 query row i both predict token i (positions 1..L-1 where labels are real)."""
    keep = labels[:, 1:] != -100  # (B, L-1)
    student = query_logits[:, 1:][keep].float().log_softmax(-1)
    teacher = teacher_content_logits[:, :-1][keep].float().log_softmax(-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    return kl.mean() if kl.numel() else query_logits.sum() * 0.0


# --------------------------------------------------------------------------------------------------
# model


def build_model(cfg: TrainConfig):
    """The A3 model (converted from the base AR model) with LoRA adapters; returns (peft model, tokenizer, start id)."""
    from peft import LoraConfig, get_peft_model

    from model.loading import _base_a3, _base_tokenizer, _start_token_id, tiny_model

    tokenizer = _base_tokenizer()
    if cfg.base == "tiny":
        model = tiny_model(len(tokenizer), seed=cfg.seed)
    elif cfg.base == "default":
        model = _base_a3(torch.float32)
    else:
        raise ValueError(f"base must be 'default' or 'tiny'; got {cfg.base!r}.")
    model.requires_grad_(False)
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS)
    model = get_peft_model(model, lora)
    for name, param in model.named_parameters():
        if name.endswith("query_embed") or "layernorm" in name or name.endswith("norm.weight"):
            param.requires_grad_(True)
    if cfg.init_adapter:
        load_adapter_weights(model, Path(cfg.init_adapter))
    return model, tokenizer, _start_token_id(tokenizer)


def build_teacher(cfg: TrainConfig):
    """The base AR model (frozen) whose left-to-right predictions the distillation term follows."""
    from model.loading import _base_a3, _base_tokenizer, tiny_model

    if cfg.base == "tiny":
        teacher = tiny_model(len(_base_tokenizer()), seed=cfg.seed)
    else:
        teacher = _base_a3(torch.float32)
    return teacher.requires_grad_(False).eval()


def load_adapter_weights(model, directory: Path) -> None:
    """Copy an adapter's weights (LoRA + query vector + norms) into the peft model; shapes must match."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = json.loads((directory / "adapter_config.json").read_text())
    lora_config = model.peft_config["default"]
    for key in ("r", "lora_alpha"):
        if saved.get(key) != getattr(lora_config, key):
            raise ValueError(f"{directory}: the adapter has {key}={saved.get(key)}, this run {key}="
                             f"{getattr(lora_config, key)}; set --lora-rank / --lora-alpha to match it.")
    if set(saved.get("target_modules") or []) != set(lora_config.target_modules):
        raise ValueError(f"{directory}: the adapter targets {sorted(saved.get('target_modules') or [])}, "
                         f"this run {sorted(lora_config.target_modules)}.")
    lora = {k: v.float() for k, v in load_file(directory / "adapter_model.safetensors").items()}
    result = set_peft_model_state_dict(model, lora)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{directory}: adapter keys that this model lacks (a different rank or base?): "
                         f"{unexpected[:3]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in load_file(directory / "a3_extra.safetensors").items():
            params["base_model.model." + name].copy_(value.float())


def extra_state(model) -> dict[str, torch.Tensor]:
    """The trainable tensors that are not LoRA: the query vector and the norms, under A3 names."""
    out = {}
    for name, param in model.named_parameters():
        if param.requires_grad and "lora_" not in name:
            out[name.removeprefix("base_model.model.")] = param.detach().float().cpu().contiguous()
    return out


def save_adapter(model, directory: Path) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    save_file(extra_state(model), directory / "a3_extra.safetensors")


# --------------------------------------------------------------------------------------------------
# checkpoints without pickle: tensors in safetensors, the rest in JSON


def save_checkpoint(model, optimizer, step: int, tokens: int, cfg: TrainConfig, directory: Path) -> None:
    from safetensors.torch import save_file

    tmp = directory.with_name(directory.name + ".tmp")
    save_adapter(model, tmp)
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{idx}.{key}"] = value.contiguous()
            else:
                scalars[f"{idx}.{key}"] = float(value)
    save_file(tensors, tmp / "optimizer.safetensors")
    meta = {"step": step, "tokens": tokens, "config": dataclasses.asdict(cfg), "scalars": scalars,
            "param_groups": state["param_groups"]}
    (tmp / "trainer_state.json").write_text(json.dumps(meta, indent=1))
    if directory.exists():
        import shutil

        shutil.rmtree(directory)
    tmp.rename(directory)


def load_checkpoint(model, optimizer, directory: Path) -> tuple[int, int]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    meta = json.loads((directory / "trainer_state.json").read_text())
    set_peft_model_state_dict(model, load_file(directory / "adapter_model.safetensors"))
    extra = load_file(directory / "a3_extra.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in extra.items():
            params["base_model.model." + name].copy_(value)
    tensors = load_file(directory / "optimizer.safetensors")
    state: dict = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"], meta["tokens"]


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
