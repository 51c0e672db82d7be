"""Adapting a pretrained LLaMA-family model to A3: `python -m model.train --preset NAME` (see `loop`).

    config      TrainConfig, the presets, the learning-rate schedule and the curriculum's stage per step
    data        training sequences (stories + the packed general corpus) and padded batches
    groupings   the grouping each batch is trained under (curriculum stages, spans, whole sentences)
    adapters    the model with LoRA adapters, its teacher, adapters and resumable checkpoints on disk
    loop        the training run and its command line
    export      an adapter for shipping (fp16, the optimizer state left out): python -m model.train.export
"""

from model.train.config import PRESETS, TrainConfig

__all__ = ["PRESETS", "TrainConfig", "train"]


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training run; see model.train.loop.train."""
    from model.train.loop import train as run

    return run(cfg)
