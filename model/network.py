"""A3's network in plain PyTorch: the modules, the KV cache and the forward, without transformers.

Reads top to bottom: config -> RoPE -> norm -> two-stream attention -> MLP -> block -> cache -> the
streams (`StreamsBody`) -> the LM head (`LMBody`). How A3 differs from LLaMA, and nothing else does:

1. Every position carries two hidden states that share *all* weights. The content stream starts from
   the token embedding; the query stream starts from one learned vector, `model.query_embed` [1, 1, H].
2. Who sees whom comes from group ids (model/masks.py): a content row of group g attends to the
   content of groups <= g, a query row to the content of groups < g. Keys and values always come from
   the content stream; the query stream only contributes attention queries.
3. RoPE uses the true positions in both streams, so the query stream knows *where* it predicts.
4. Logits come from the query stream, and the loss scores position i against token i (no shift).
   Rows that see nothing (the first group) get a zero attention output and are not scored.
5. `block_layout="official"` reproduces the official code's block, which re-normalises the residual
   stream after attention (research/paper.md §6.2); the default "prenorm" is LLaMA's own block, so
   under left-to-right grouping the content stream *is* the base model.

Both streams run as one batch of rows through every layer ("fused"): rows = [content rows; query
rows], keys = [cached content; new content]. A training forward has L content and L query rows; a
cached decoding step has only the newly committed group's content rows and the next group's query
rows, attending to the cache (A3Cache) of earlier groups, whose keys and values never change.

Two classes run this one forward. `model.modeling.A3ForAnyOrderLM` is a transformers `PreTrainedModel`
(save_pretrained / from_pretrained, the Auto classes, peft's adapters in training). `A3Net` here is the
same modules with the same parameter names, so the same state dict and the same bits, as a plain
`nn.Module` with an `A3NetConfig`: what the app's default model runs on, so that a start does not import
transformers' modelling code (about 2 s of a 2-core CPU's start-up; docs/benchmarks.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from model.masks import group_visibility, two_stream_masks

BLOCK_LAYOUTS = ("prenorm", "official")


# --------------------------------------------------------------------------------------------------
# config


@dataclass
class A3NetConfig:
    """What the network reads of a config, with LLaMA's defaults (transformers' LlamaConfig) for what a
    config.json leaves out. `model.modeling.A3Config` (a transformers config) serves the network as well:
    both have these attributes."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as attention heads
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    rope_parameters: dict | None = None  # {"rope_type": ..., "rope_theta": ...}; None: default RoPE, theta 1e4
    block_layout: str = "prenorm"
    a3_base: str | None = None

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.rope_parameters is None:
            self.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        if self.block_layout not in BLOCK_LAYOUTS:
            raise ValueError(f"block_layout must be one of {BLOCK_LAYOUTS}; got {self.block_layout!r}.")
        if self.hidden_act != "silu":
            raise ValueError(f"A3 supports LLaMA's silu MLP only; config hidden_act={self.hidden_act!r}.")

    @classmethod
    def from_dict(cls, config: dict) -> A3NetConfig:
        """From a LLaMA or A3 config.json's dict (or a transformers config's `to_dict()`): the keys the network
        reads, RoPE spelled as transformers spells it (`rope_parameters`, or the older `rope_theta` plus
        `rope_scaling`); everything else is left out."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in config.items() if k in known}
        if not kept.get("rope_parameters"):
            scaling = dict(config.get("rope_scaling") or {})
            rope_type = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
            kept["rope_parameters"] = {**scaling, "rope_type": rope_type,
                                       "rope_theta": float(config.get("rope_theta", 10000.0))}
        return cls(**kept)

    @classmethod
    def of(cls, config) -> A3NetConfig:
        """An A3NetConfig itself, or the same read from a transformers config."""
        return config if isinstance(config, cls) else cls.from_dict(config.to_dict())

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json_string(self, use_diff: bool = False) -> str:  # noqa: ARG002 - transformers' signature; no diff
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------------------------------
# RoPE (LLaMA's own formulas; the rope types other than the default come from transformers)


class A3Rotary(nn.Module):
    """LLaMA's default RoPE, as transformers' LlamaRotaryEmbedding computes it, bit for bit: cos and sin
    (B, T, D) of the rows' positions, computed in float32 and returned in the rows' dtype."""

    def __init__(self, config):
        super().__init__()
        frequencies = self.frequencies(config)
        self.inv_freq = nn.Buffer(frequencies.clone(), persistent=False)
        # a plain attribute, never a buffer (Module would register a tensor set here as one, and cast it): what
        # `.to(bfloat16)` must not round (1.4e-3 at 0.7, so 0.7 rad by position 500)
        object.__setattr__(self, "_float32", frequencies)

    def _apply(self, fn, recurse=True):
        """Moves follow the model (device); casts leave the frequencies float32 (forward computes in float32)."""
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32:
            self.inv_freq = self._float32.to(self.inv_freq.device)
        return self

    @staticmethod
    def frequencies(config) -> torch.Tensor:
        """The inverse frequencies (D / 2,) of a config's default RoPE, on the CPU even inside a meta-device
        context (torch's meta arange imports torch._dynamo, ~1 s of a start)."""
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        steps = torch.arange(0, dim, 2, dtype=torch.float, device="cpu")
        return 1.0 / (config.rope_parameters["rope_theta"] ** (steps / dim))

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


def rotary_embedding(config) -> nn.Module:
    """The RoPE module for a config: A3Rotary for the default type; transformers' LlamaRotaryEmbedding (every
    other rope_type: linear, dynamic, llama3, ...), imported only then."""
    if config.rope_parameters.get("rope_type", "default") == "default":
        return A3Rotary(config)
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    if not isinstance(config, LlamaConfig):
        config = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k not in ("block_layout", "a3_base")})
    return LlamaRotaryEmbedding(config=config)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] over the last dimension (LLaMA's)."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


# --------------------------------------------------------------------------------------------------
# norm


class A3RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # One call instead of six small ops (a decoding step has two norms per layer on 1-2 rows, where
            # each op's dispatch costs more than its arithmetic); the same formula, the same bits on the CPU
            # (tests/test_modeling.py compares it with LLaMA's spelled-out form below).
            return F.rms_norm(x, self.weight.shape, self.weight, self.variance_epsilon)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


# --------------------------------------------------------------------------------------------------
# attention


# The last mask `attend` prepared: (visible, its version counter, SDPA's mask, the rows' keep factor). Every
# layer of a forward attends with the same `visible` tensor, so the preparation (five small ops, as costly as
# the attention itself on a one-row decoding step) runs once per forward instead of once per layer. Keyed by
# the tensor itself (kept alive here, so its id cannot be reused) and its version (an in-place change to the
# mask prepares it again); a tuple read and written whole, so concurrent decodes never mix two masks.
_PREPARED_MASK: tuple | None = None


def _prepared_mask(visible: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    global _PREPARED_MASK
    memo = _PREPARED_MASK
    if memo is not None and memo[0] is visible and memo[1] == visible._version and memo[3].dtype == dtype:
        return memo[2], memo[3]
    sees_any = visible.any(-1)  # (B, R)
    safe = (visible | ~sees_any.unsqueeze(-1)).unsqueeze(1)  # (B, 1, R, K)
    keep = sees_any[:, None, :, None].to(dtype)  # (B, 1, R, 1)
    if not torch.is_grad_enabled() and not visible.requires_grad:
        _PREPARED_MASK = (visible, visible._version, safe, keep)
    return safe, keep


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Masked attention in which a row that sees nothing gets exactly zero.

    q (B, Hq, R, D), k/v (B, Hkv, K, D), visible (B, R, K) bool -> (B, Hq, R, D).
    SDPA gives NaN for an all-masked row on some backends, so such rows are let see everything
    and their output is zeroed afterwards (LLaMA's o_proj has no bias, so the sublayer adds 0).
    """
    B, Hq, R, D = q.shape
    if k.shape[2] == 0:
        return q.new_zeros(B, Hq, R, D)
    safe, keep = _prepared_mask(visible, q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, enable_gqa=k.shape[1] != Hq)
    return out * keep


class A3Attention(nn.Module):
    FUSABLE = ("q_proj", "k_proj", "v_proj")  # model.packed_linear may set `fused`: the three in one product
    fused = None

    def __init__(self, config):
        super().__init__()
        self.head_dim = config.head_dim
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        hidden, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(hidden, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, hidden, bias=bias)
        # Read-only tap for model/attention.py: called with the exact q, k and mask `attend` gets. None
        # except inside `model.attention.capture_attention`, so a normal forward pays one `is None` check.
        self.observer = None

    def forward(self, rows, n_content, rope, visible, cache=None, layer=0):
        """rows (B, R, H): the first n_content rows are content, the rest query rows.

        rope: (cos, sin) for the rows' positions; visible (B, R, P + n_content) where P keys of earlier
        groups sit in `cache` (or P = 0). This call's content keys/values (rotated) are appended to the
        cache in place, so attention reads one contiguous view and nothing is copied.
        """
        B, R, _ = rows.shape
        cos, sin = rope.tables if isinstance(rope, RopeTables) else rope  # (B, 1, T, D) prepared, or (B, T, D)
        qkv = self.fused(rows) if self.fused is not None else None  # (B, R, Hq*D + 2*Hkv*D), or None
        if qkv is None:
            q = self.q_proj(rows)
            content = rows[:, :n_content]
            k, v = self.k_proj(content), self.v_proj(content)
        else:  # k and v of the query rows too (the same weight bytes read), then only the content rows kept
            q, k, v = qkv.split(self.fused.sizes, -1)
            k, v = k[:, :n_content], v[:, :n_content]
        q = q.reshape(B, R, self.n_heads, self.head_dim).transpose(1, 2)  # (B, Hq, R, D)
        k = k.reshape(B, n_content, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(B, n_content, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = rope_rotate(q, cos, sin), rope_rotate(k, cos[..., :n_content, :], sin[..., :n_content, :])
        if cache is not None:
            k, v = cache.extend(layer, k, v)  # (B, Hkv, P + C, D)
        observer = self.observer  # read once: another thread may clear it meanwhile
        if observer is not None:
            observer(q, k, visible)  # reads only; never changes what follows
        out = attend(q, k, v, visible)  # (B, Hq, R, D)
        out = out.transpose(1, 2).reshape(B, R, self.n_heads * self.head_dim)
        return self.o_proj(out)


def rope_rotate(x, cos, sin):
    """Rotate x (B, H, T, D) by RoPE at the rows' true positions; cos/sin (B, T, D) as LLaMA's rotary
    embedding gives them, or (B, 1, T, D) as RopeTables prepares them once per forward (sin signed)."""
    if cos.dim() == 4:  # RopeTables: rotate_half(x) * sin == x.roll(D / 2) * signed sin, bit for bit
        return x * cos + x.roll(x.shape[-1] // 2, -1) * sin
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


class RopeTables(tuple):
    """LLaMA's (cos, sin) of a forward's rows, (B, T, D) each (it unpacks as that pair), plus `tables`: the
    same prepared once for every layer, (B, 1, T, D), with the sign of rotate_half folded into sin's first
    half (rotate_half(x) = [-x2, x1], so rotate_half(x) * sin = [x2, x1] * [-sin1, sin2]: the same products,
    the same bits). A decoding step rotates q and k in each of 30 layers; this saves six small ops a time."""

    def __new__(cls, rope):
        cos, sin = rope
        self = super().__new__(cls, (cos, sin))
        first, second = sin.chunk(2, -1)
        self.tables = (cos.unsqueeze(1), torch.cat((-first, second), -1).unsqueeze(1))
        return self


# --------------------------------------------------------------------------------------------------
# MLP and block


class A3MLP(nn.Module):
    FUSABLE = ("gate_proj", "up_proj")  # model.packed_linear may set `fused`: the two in one product
    fused = None

    def __init__(self, config):
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        if config.hidden_act != "silu":
            raise ValueError(f"A3 supports LLaMA's silu MLP only; config.hidden_act={config.hidden_act!r}.")

    def forward(self, x):
        both = self.fused(x) if self.fused is not None else None
        if both is None:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate, up = both.split(self.fused.sizes, -1)
        return self.down_proj(F.silu(gate) * up)


class A3Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.input_layernorm = A3RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = A3Attention(config)
        self.post_attention_layernorm = A3RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = A3MLP(config)
        self.official = config.block_layout == "official"

    def forward(self, rows, n_content, rope, visible, cache=None, layer=0):
        # Self attention (both streams at once; K/V from the content rows only)
        hidden = rows + self.self_attn(self.input_layernorm(rows), n_content, rope, visible, cache, layer)
        # Fully connected
        if self.official:
            hidden = self.post_attention_layernorm(hidden)  # the residual itself is normalised
            return hidden + self.mlp(hidden)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


# --------------------------------------------------------------------------------------------------
# KV cache of the content stream


class A3Cache:
    """Content keys/values of committed groups, one slot per committed position.

    A3's content row of group g depends only on groups <= g, so once a group is committed its keys and
    values never change: they are appended once and reused by every later step. A caller that appends rows
    provisionally (masked diffusion's known rows after its first blank, which the next reveal changes)
    forgets them with `truncate`; the rows before stay as they were.
    """

    def __init__(self, config, batch_size: int, max_len: int, *, device=None, dtype=None):
        shape = (batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.groups = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
        self.length = 0
        self.max_len = max_len

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write this call's keys/values after the committed ones; return views of all of them."""
        n, c = self.length, k.shape[2]
        if n + c > self.max_len:
            raise RuntimeError(f"A3Cache is full: {n} + {c} slots > max_len {self.max_len}.")
        keys, values = self.k[layer], self.v[layer]
        keys.narrow(2, n, c).copy_(k)  # narrow: one op where [:, :, n : n + c] is three
        values.narrow(2, n, c).copy_(v)
        return keys.narrow(2, 0, n + c), values.narrow(2, 0, n + c)

    def truncate(self, length: int) -> None:
        """Forget every row from slot `length` on (the next call writes there); the rows before are kept."""
        if not 0 <= length <= self.length:
            raise ValueError(f"A3Cache.truncate: length must be in [0, {self.length}]; got {length}.")
        self.length = length

    def advance(self, groups: torch.Tensor, positions: torch.Tensor) -> None:
        """Commit the rows written by the last forward (groups/positions: (B, C))."""
        n, c = self.length, groups.shape[1]
        self.groups[:, n : n + c] = groups
        self.positions[:, n : n + c] = positions
        self.length = n + c


# --------------------------------------------------------------------------------------------------
# the two streams and the LM head (bodies shared by A3Net here and model.modeling's transformers classes)


@dataclass
class A3StreamsOutput:
    content: torch.Tensor | None = None  # (B, C, H) final-normed content rows (only when asked for)
    query: torch.Tensor | None = None  # (B, Q, H) final-normed query rows


@dataclass
class A3Output:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, L, V) query-stream logits: p(x_i | x_{G < g_i})
    content_logits: torch.Tensor | None = None  # (B, L, V) content stream through the LM head
    n_scored: torch.Tensor | None = None


class StreamsBody:
    """The embeddings, the blocks and the final norm of both streams (`model.model` of an A3 LM)."""

    def _build(self, config, *, empty_embeddings: bool = False) -> None:
        # empty_embeddings: an A3Net's table is left as allocated (weights are loaded into it), which also keeps
        # nn.Embedding's normal_ off meta tensors: torch implements that through its refs, which import
        # torch._dynamo (~1 s of a start). transformers' classes initialise it as they always did.
        weight = torch.empty(config.vocab_size, config.hidden_size) if empty_embeddings else None
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id, _weight=weight)
        self.query_embed = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.layers = nn.ModuleList(A3Block(config) for _ in range(config.num_hidden_layers))
        self.norm = A3RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = rotary_embedding(config)

    def forward(
        self,
        content_ids: torch.Tensor,  # (B, C) tokens whose content rows are computed in this call
        content_positions: torch.Tensor,  # (B, C)
        content_groups: torch.Tensor,  # (B, C)
        query_positions: torch.Tensor,  # (B, Q) positions to predict
        query_groups: torch.Tensor,  # (B, Q)
        cache: A3Cache | None = None,
        key_padding: torch.Tensor | None = None,  # (B, C) True for real tokens (no cache only)
        return_content: bool = False,
    ) -> A3StreamsOutput:
        B, C = content_ids.shape
        Q = query_positions.shape[1]
        past = cache.length if cache is not None else 0
        key_groups = content_groups if cache is None else torch.cat([cache.groups[:, :past], content_groups], 1)
        # content rows: g_key <= g_row ; query rows: g_key < g_row   (model/masks.py)
        visible = torch.cat(
            [group_visibility(content_groups, key_groups, strict=False),
             group_visibility(query_groups, key_groups, strict=True)], dim=1,
        )  # (B, C + Q, P + C)
        if key_padding is not None:
            if cache is not None:
                raise ValueError("key_padding is for uncached forwards; a cache holds real tokens only.")
            visible = visible & key_padding.bool().unsqueeze(1)

        content = self.embed_tokens(content_ids)  # (B, C, H)
        query = self.query_embed.to(content.dtype).expand(B, Q, -1)  # (B, Q, H)
        rows = torch.cat([content, query], 1)  # (B, C + Q, H)
        positions = torch.cat([content_positions, query_positions], 1)
        rope = RopeTables(self.rotary_emb(rows, positions))  # cos, sin (B, C + Q, D), prepared for every layer

        for i, layer in enumerate(self.layers):
            rows = layer(rows, C, rope, visible, cache, i)
        if cache is not None:
            cache.advance(content_groups, content_positions)

        rows = self.norm(rows)
        return A3StreamsOutput(content=rows[:, :C] if return_content else None, query=rows[:, C:])


class LMBody:
    """An A3 LM's forward over whole sequences: group ids in, query-stream logits (and the loss) out."""

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        group_ids: torch.Tensor | None = None,  # (B, L) or (L,); default left-to-right
        attention_mask: torch.Tensor | None = None,  # (B, L) 1 = real token, 0 = padding
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,  # (B, L) -100 = not scored; scored against position i
        return_content_logits: bool = False,
        return_dict: bool | None = None,  # accepted for transformers callers; the output is always an A3Output
        use_cache: bool | None = None,  # accepted and ignored: decoding caches through A3Cache (model.decoding)
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **unknown,
    ) -> A3Output:
        if unknown:
            raise TypeError(_unknown_arguments_message(unknown, self.forward))
        if output_attentions or output_hidden_states:
            raise ValueError(f"{type(self).__name__} does not return attentions or hidden states; use "
                             "model.model(...) (A3Model) with return_content=True for the final hidden rows.")
        B, L = input_ids.shape
        if self.config.max_position_embeddings < L:
            raise ValueError(f"sequence length {L} exceeds max_position_embeddings "
                             f"({self.config.max_position_embeddings}); shorten the input.")
        device = input_ids.device
        if group_ids is None:
            group_ids = torch.arange(L, device=device)
        group_ids = torch.as_tensor(group_ids, device=device).long().expand(B, L)
        if position_ids is None:
            position_ids = torch.arange(L, device=device).expand(B, L)
        streams = self.model(input_ids, position_ids, group_ids, position_ids, group_ids,
                             key_padding=attention_mask, return_content=return_content_logits)
        logits = self.lm_head(streams.query)
        loss = n_scored = None
        if labels is not None:
            loss, n_scored = a3_loss(logits, labels, group_ids, attention_mask)
        content_logits = self.lm_head(streams.content) if return_content_logits else None
        return self.output_class(loss=loss, logits=logits, content_logits=content_logits, n_scored=n_scored)

    output_class = A3Output


class A3NetStreams(StreamsBody, nn.Module):
    """model.modeling.A3Model without transformers."""

    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self._build(config, empty_embeddings=True)


class A3Net(LMBody, nn.Module):
    """model.modeling.A3ForAnyOrderLM without transformers: the same parameters (`model.*`, `lm_head`), the
    same forward. Built to load weights into (`torch.device("meta")` and `load_state_dict(assign=True)`, as
    model.merged_cache and model.loading do): its own parameters are not initialised as a model to train (the
    token embeddings are left empty)."""

    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self.model = A3NetStreams(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    @property
    def device(self) -> torch.device:  # as transformers' models have it
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:  # the first floating-point parameter's, as transformers' models have it
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def tie_weights(self) -> None:
        """The LM head shares the token embeddings where the config ties them (LLaMA's tie_word_embeddings)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight


def _unknown_arguments_message(unknown: dict, method) -> str:
    """Name the unknown keyword arguments and the closest accepted ones (a typo must not decode AR)."""
    import difflib
    import inspect

    known = [n for n, p in inspect.signature(method).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    parts = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (f"{type(method.__self__).__name__}.forward got unknown keyword argument(s) {', '.join(parts)}; "
            f"it accepts {', '.join(known)}.")


def scored_positions(group_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L) bool: positions whose query row sees at least one real token (others are not scored)."""
    _, query = two_stream_masks(group_ids, attention_mask.bool() if attention_mask is not None else None)
    return query.any(-1)


def a3_loss(logits, labels, group_ids, attention_mask=None):
    """Mean cross-entropy of query logits at i against token i (no shift) over scored positions."""
    keep = scored_positions(group_ids, attention_mask) & (labels != -100)
    if attention_mask is not None:
        keep &= attention_mask.bool()
    n = keep.sum()
    nll = F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum")
    return nll / n.clamp(min=1), n
