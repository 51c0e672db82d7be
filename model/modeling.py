"""A3 as a transformers model: `A3Config` (a LlamaConfig) and `A3ForAnyOrderLM` (a PreTrainedModel).

The network itself (modules, cache, forward, loss) is model/network.py, in plain PyTorch; this module gives
it what transformers offers: `save_pretrained` / `from_pretrained` in safetensors, the Auto classes
(importing this module registers "a3"), weight initialisation, and the PreTrainedModel that peft's adapters wrap in
training (model.train). `A3Model` and `A3ForAnyOrderLM` run network.py's `StreamsBody` and `LMBody`, so they
compute what `network.A3Net` computes, bit for bit, from the same state dict. The network's names are
re-exported here (`from model.modeling import A3Cache` keeps working).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, LlamaConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput

from model.network import (  # noqa: F401 - re-exported: the network's names, as they were before the split
    A3MLP,
    BLOCK_LAYOUTS,
    A3Attention,
    A3Block,
    A3Cache,
    A3RMSNorm,
    A3Rotary,
    A3StreamsOutput,
    LMBody,
    RopeTables,
    StreamsBody,
    a3_loss,
    attend,
    rope_rotate,
    rotate_half,
    scored_positions,
)

# --------------------------------------------------------------------------------------------------
# config


@strict
class A3Config(LlamaConfig):
    """LLaMA hyperparameters plus the block layout. Hyperparameters only: no behaviour here.

    `a3_base` is metadata: the AR model this checkpoint was adapted from ("default", a directory or a
    hub id), which model.loading loads as the AR baseline; None = not named, no baseline.
    """

    model_type = "a3"
    block_layout: str = "prenorm"  # "prenorm" (LLaMA) | "official" (residual re-normalised, paper §6.2)
    a3_base: str | None = None

    def validate_architecture(self):
        super().validate_architecture()
        if self.block_layout not in BLOCK_LAYOUTS:
            raise ValueError(f"block_layout must be one of {BLOCK_LAYOUTS}; got {self.block_layout!r}.")


# --------------------------------------------------------------------------------------------------
# model


class A3PreTrainedModel(PreTrainedModel):
    config_class = A3Config
    config: A3Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["A3Block"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, A3Model):
            # At the scale of token embeddings (std = initializer_range), not randn's std 1.
            nn.init.normal_(module.query_embed, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, A3RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, A3Rotary):  # a buffer no checkpoint holds: from_pretrained makes it here
            init.copy_(module.inv_freq, A3Rotary.frequencies(self.config))


class A3Model(StreamsBody, A3PreTrainedModel):
    """Both streams (network.StreamsBody) as a transformers model."""

    def __init__(self, config: A3Config):
        A3PreTrainedModel.__init__(self, config)
        self._build(config)
        self.post_init()


@dataclass
class A3Output(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, L, V) query-stream logits: p(x_i | x_{G < g_i})
    content_logits: torch.Tensor | None = None  # (B, L, V) content stream through the LM head
    n_scored: torch.Tensor | None = None


class A3ForAnyOrderLM(LMBody, A3PreTrainedModel):
    """An A3 LM (network.LMBody) as a transformers model."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    output_class = A3Output

    def __init__(self, config: A3Config):
        A3PreTrainedModel.__init__(self, config)
        self.model = A3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


# --------------------------------------------------------------------------------------------------
# transformers' Auto classes know "a3" once this module is imported (model.loading.register imports it)


AutoConfig.register("a3", A3Config, exist_ok=True)
AutoModel.register(A3Config, A3Model, exist_ok=True)
AutoModelForCausalLM.register(A3Config, A3ForAnyOrderLM, exist_ok=True)
