"""Training sequences: the story corpus and the packed general corpus as token ids, padded batches."""


from __future__ import annotations

from pathlib import Path

import torch

from model.train.config import TrainConfig

# --------------------------------------------------------------------------------------------------
# data


def load_sequences(tokenizer, start_token_id: int, split: str, cfg: TrainConfig) -> list[list[int]]:
    """Stories as token ids: start token + story, cut to seq_len; plus the packed general corpus."""
    from model.data.stories import read_stories

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
    from model.data.general import read_general

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

