"""The model being trained: the A3 model with LoRA adapters, its teacher, and saving/loading adapters
and checkpoints (safetensors + JSON, no pickle)."""


from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from model.train.config import TrainConfig

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# --------------------------------------------------------------------------------------------------
# model


def build_model(cfg: TrainConfig):
    """The A3 model (converted from the base AR model) with LoRA adapters; returns (peft model, tokenizer, start id)."""
    from peft import LoraConfig, get_peft_model

    from model.loading import as_transformers, base_a3, base_tokenizer, start_token_id_of, tiny_model

    tokenizer = base_tokenizer()
    if cfg.base == "tiny":
        model = tiny_model(len(tokenizer), seed=cfg.seed)
    elif cfg.base == "default":
        model = as_transformers(base_a3(torch.float32))  # peft wraps the transformers class, as it always did
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
    return model, tokenizer, start_token_id_of(tokenizer)


def build_teacher(cfg: TrainConfig):
    """The base AR model (frozen) whose left-to-right predictions the distillation term follows."""
    from model.loading import base_a3, base_tokenizer, tiny_model

    if cfg.base == "tiny":
        teacher = tiny_model(len(base_tokenizer()), seed=cfg.seed)
    else:
        teacher = base_a3(torch.float32)
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


