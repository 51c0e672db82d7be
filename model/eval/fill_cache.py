"""The evaluation's fills, kept on disk as they are made, so a long run can stop and go on.

The full evaluation (4 blanks per story and the general split, every method) decodes for hours on a
2-core CPU. `python -m model.eval --fills-cache runs/eval/v7.fills.jsonl ...` appends one JSON line per
(blank, method) the moment the fill is decoded; run the same command again after an interruption and
every fill already there is read back instead of decoded. Only the decoding is kept: the scores
(ROUGE, the judge's NLLs, repeats) are recomputed from the fills, so they always follow today's code.

A line is used only for the same model weights (`model_key`: a checksum of every parameter, not the
path), the same method, the same blank (its token ids, given positions and span) and the same
given-token grouping; anything else decodes afresh. A torn last line (the process killed mid-write)
is skipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

__all__ = ["FillCache", "model_key"]


def model_key(model: torch.nn.Module) -> str:
    """A checksum of the model's weights: two models with the same key decode the same fills."""
    digest = hashlib.sha1()
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            values = param.detach().double()
            digest.update(f"{name}:{tuple(param.shape)}:{values.sum().item():.10e}:"
                          f"{values.abs().sum().item():.10e}".encode())
    return digest.hexdigest()[:16]


def _blank_key(example: dict, method: str, given_grouping: str) -> str:
    """method: what names the method's fills exactly (model.eval.infill.method_identity: its config)."""
    ids = example["ids"].tolist() if hasattr(example["ids"], "tolist") else list(example["ids"])
    given = example["given"].tolist() if hasattr(example["given"], "tolist") else list(example["given"])
    text = json.dumps([ids, [bool(g) for g in given], list(example["span"]), method, given_grouping])
    return hashlib.sha1(text.encode()).hexdigest()


class FillCache:
    """Fills by (model, blank, method), read from and appended to a JSON-lines file."""

    def __init__(self, path: str | Path, model_key: str):
        self.path, self.model_key = Path(path), model_key
        self.fills: dict[str, list[int]] = {}
        self.hits = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a kill mid-write
                    continue
                if row.get("model") == model_key:
                    self.fills[row["blank"]] = row["fill"]
            if not self.path.read_bytes().endswith(b"\n"):  # end a torn line, so the next one stands alone
                with self.path.open("a", encoding="utf-8") as out:
                    out.write("\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.fills)

    def get(self, example: dict, method: str, given_grouping: str) -> list[int] | None:
        found = self.fills.get(_blank_key(example, method, given_grouping))
        if found is not None:
            self.hits += 1
        return found

    def put(self, example: dict, method: str, given_grouping: str, fill: list[int]) -> None:
        key = _blank_key(example, method, given_grouping)
        self.fills[key] = [int(t) for t in fill]
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"model": self.model_key, "blank": key, "method": json.loads(method)[0]
                                  if method.startswith("[") else method,
                                  "fill": self.fills[key]}) + "\n")
