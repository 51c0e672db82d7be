"""The default model's merged float32 weights, kept on disk so a start skips peft and the LoRA merge.

    cached_model(path, config, merge)     the model read from `path`, or merge() and kept there
    cache_file(directory, config, *sources)   where: named by the sources' content hashes, the config, versions
    A3_MERGED_CACHE=0                     neither reads nor writes the file: every start merges afresh

Merging the A3 adapter into SmolLM2 (importing peft, `PeftModel.from_pretrained(...).merge_and_unload()`) was
~35% of a start to the first answer (bench.startup, 2 cores). The merged weights are a function of the base's
weights, the adapter's files, the merge (VERSION), the config and the torch and peft versions, so
load_model("default") keeps them beside the converted base as one safetensors file (~540 MB, nothing
unpickled) named by a hash of all of these, and the next start builds the model from it without importing
peft: the same tensors, the rotary tables rebuilt from the config (as every conversion does), float32, eval
mode, the parameters frozen as the merge leaves them. The config is never taken from the file: model.loading
builds it from the base's config.json as for a fresh merge; the file's metadata holds it too, and a file made
for another config is stale.

A file that cannot be used (torn, foreign, another version, shapes or config) is logged and merged afresh,
then overwritten; one that cannot be written (a read-only directory, a full disk) costs a merge per start and
nothing else. Writes go to a temporary name that is then renamed, so a killed start never leaves half a file
under the real name; writing one removes the directory's other files of this kind (one adapter at a time:
each is ~540 MB). model.quant keeps the int8 weights the same way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from model.network import A3Net, A3NetConfig, rotary_embedding

if TYPE_CHECKING:
    from model.modeling import A3ForAnyOrderLM

log = logging.getLogger(__name__)

FORMAT = "a3-merged-f32"
# Bump when what the merge computes changes (model.loading.apply_adapter); caches are keyed by it. 2: the
# config kept and checked is network.A3NetConfig's JSON.
VERSION = 2
PREFIX = f"{FORMAT}-"
ENV = "A3_MERGED_CACHE"
STALE_TMP_S = 3600  # a temporary file this old belongs to a start that died while writing it


def enabled(environ=None) -> bool:
    """Whether the merged weights are read from and kept on disk: yes unless A3_MERGED_CACHE is 0 (or
    false, no, off)."""
    raw = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    return raw not in ("0", "false", "no", "off")


def _peft_version() -> str:
    try:
        return importlib.metadata.version("peft")  # read from the metadata: peft is not imported
    except importlib.metadata.PackageNotFoundError:
        return "none"


def config_json(config) -> str:
    """The config as the cache names and checks it: network.A3NetConfig's JSON (what the network reads), the same
    for an A3NetConfig and for a transformers A3Config with the same hyperparameters."""
    return A3NetConfig.of(config).to_json_string()


def cache_file(directory: str | Path, config, *sources: str) -> Path:
    """Where the merged weights of a model made from `sources` (content hashes: the base's weights, the
    adapter's files) with `config` are kept in `directory`: the name hashes the sources, the config, the
    format and its version, and the torch and peft versions, so any change of one merges afresh."""
    parts = [*sources, config_json(config), FORMAT, str(VERSION), torch.__version__,
             f"peft {_peft_version()}"]
    return Path(directory) / f"{PREFIX}{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:16]}.safetensors"


def _tied(model: A3ForAnyOrderLM) -> bool:
    return model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def save_merged(model: A3ForAnyOrderLM, path: str | Path) -> Path:
    """Write a merged float32 A3 model as one safetensors file (an LM head tied to the embeddings once),
    through a temporary name and a rename; then remove the directory's other files of this kind."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tied = _tied(model)
    if tied:
        state.pop("lm_head.weight")
    wrong = sorted(k for k, v in state.items() if v.dtype != torch.float32)
    if wrong:
        raise ValueError(f"only float32 models are kept; {wrong[0]} is {state[wrong[0]].dtype}.")
    meta = {"format": FORMAT, "version": str(VERSION), "tied_lm_head": str(int(tied)),
            "config": config_json(model.config), "torch": torch.__version__,
            "peft": _peft_version()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        with open(tmp, "rb") as written:  # on disk before the name says it is complete (a crash after the rename)
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # only there when writing or renaming failed
    _remove_others(path)
    return path


def _remove_others(kept: Path) -> None:
    """The other merged files in `kept`'s directory (another adapter's, older versions') and temporary files
    that starts which died while writing left behind."""
    now = time.time()
    for path in kept.parent.glob(f"{PREFIX}*.safetensors"):
        if path != kept:
            try:
                path.unlink()
                log.info("removed the merged weights %s (superseded by %s)", path.name, kept.name)
            except OSError as err:
                log.warning("could not remove the old merged weights %s (%s)", path, err)
    for path in kept.parent.glob(f".{PREFIX}*.tmp"):
        try:
            if now - path.stat().st_mtime > STALE_TMP_S:
                path.unlink()
        except OSError:
            pass


def load_merged(path: str | Path, config) -> A3Net:
    """The A3 model kept by save_merged in `path`, built with `config` as a network.A3Net (nothing is unpickled,
    neither peft nor transformers' modelling code is imported). Raises (ValueError, or safetensors' own error
    for a torn file) for a file of another format, version or config, or tensors that do not fit the config
    exactly."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or meta.get("version") != str(VERSION):
            raise ValueError(f"not an {FORMAT} file of version {VERSION} (format {meta.get('format')!r}, "
                             f"version {meta.get('version')!r}).")
        config = A3NetConfig.of(config)
        if meta.get("config") != config_json(config):
            raise ValueError("made for another config.")
        state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    with torch.device("meta"):
        model = A3Net(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight")
    if set(state) != set(expected) or (meta.get("tied_lm_head") == "1") != bool(config.tie_word_embeddings):
        raise ValueError(f"the tensors do not fit the config (missing {sorted(set(expected) - set(state))[:3]}, "
                         f"unexpected {sorted(set(state) - set(expected))[:3]}, tied lm_head "
                         f"{meta.get('tied_lm_head')!r}).")
    wrong = [k for k, v in state.items() if tuple(v.shape) != expected[k] or v.dtype != torch.float32]
    if wrong:
        raise ValueError(f"{wrong[0]} is {state[wrong[0]].dtype} {tuple(state[wrong[0]].shape)}; the config makes "
                         f"it float32 {expected[wrong[0]]}.")
    model.load_state_dict(state, strict=False, assign=True)
    model.model.rotary_emb = rotary_embedding(config)  # buffers are not kept
    model.tie_weights()
    model.requires_grad_(False)  # as merge_and_unload leaves them
    return model.eval()


def cached_model(path: Path | None, config, merge: Callable[[], A3ForAnyOrderLM]) -> A3Net | A3ForAnyOrderLM:
    """The merged model: read from `path` where it holds a usable file, else merge() and kept there (None,
    or A3_MERGED_CACHE=0: merge() alone)."""
    if path is None or not enabled():
        return merge()
    if path.is_file():
        try:
            return load_merged(path, config)
        except Exception as err:  # a torn, foreign or stale file: merged again and overwritten below
            log.warning("merged weights %s unusable (%s: %s); merging again", path, type(err).__name__, err)
    model = merge()
    try:
        save_merged(model, path)
    except Exception as err:  # a read-only directory, a full disk: a merge per start, never a failed start
        log.warning("could not keep the merged weights in %s (%s: %s)", path, type(err).__name__, err)
    return model
