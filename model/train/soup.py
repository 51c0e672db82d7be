"""Average A3 adapters warm-started from one base adapter (a "model soup" in weight space).

    python -m model.train.soup assets/a3-smollm2-135m runs/soup runs/cpu-v14/export-ck:0.5 runs/cpu-v16/export-ck40:0.5

Each run after a shipped adapter moved its weights a little way from it, and each such move traded one
measure for another (one run gained random-order likelihood and lost some left to right, another the other
way round). The soup is the base plus a weighted sum of those moves,

    soup = base + sum_i w_i (run_i - base)

tensor by tensor, over every LoRA matrix and the A3 extras (query vector, norms). With weights that sum to 1
it is the weighted average of the runs. The LoRA matrices are averaged one by one, not their products: for
runs that stayed close to the base (each a few percent of its norm) the product of the averages is the
average of the products up to second-order terms. Whether a soup is better is for the evaluation to say
(`python -m model.eval --compare`), as for any other adapter.

Every run must have the base's adapter_config.json (rank, alpha, targets) and tensor names and shapes; the
soup keeps the base's config and storage dtype. Everything is checked before anything is written, and the
soup goes to a new directory, never over its inputs. Safetensors in and out, nothing else.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from model.train.export import FILES

# what may differ between the base and a run without changing what their tensors mean (the rest of
# adapter_config.json: rank, alpha and its patterns, targets, ... must agree)
_FREE_CONFIG = {"base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping",
                "init_lora_weights"}


def _config(directory: Path) -> dict:
    path = directory / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not an A3 adapter directory: missing adapter_config.json")
    config = json.loads(path.read_text())
    # an empty list or dict means what None means ("modules_to_save": [] as null); lists compare as sets
    return {key: (sorted(value) if isinstance(value, list) else value) for key, value in config.items()
            if key not in _FREE_CONFIG and value not in (None, [], {})}


def parse_part(text: str) -> tuple[Path, float]:
    """"DIR:WEIGHT" (a weight of 1 when none is given) as (Path, float)."""
    directory, sep, weight = text.rpartition(":")
    if not sep:
        return Path(text), 1.0
    try:
        return Path(directory), float(weight)
    except ValueError:
        raise ValueError(f"{text!r}: write a run as DIR or DIR:WEIGHT, the weight a number (e.g. runs/a:0.5)") \
            from None


def _read(base: Path, parts: list[tuple[Path, float]]) -> dict[str, tuple[dict, list]]:
    """Every file of the base and of each run, checked to hold the same tensors (names and shapes)."""
    read = {}
    for name in FILES:
        missing = [str(d) for d in (base, *(run for run, _ in parts)) if not (d / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{name} is missing from {', '.join(missing)}: not A3 adapter directories")
        start = load_file(base / name)
        runs = [(load_file(run / name), weight) for run, weight in parts]
        for (tensors, _), (run, _) in zip(runs, parts, strict=True):
            if tensors.keys() != start.keys():
                odd = sorted(tensors.keys() ^ start.keys())[:3]
                raise ValueError(f"{run / name} does not hold the base's tensors (first differences: {odd})")
            for key, value in tensors.items():
                if value.shape != start[key].shape:
                    raise ValueError(f"{run / name}: {key} is {tuple(value.shape)}, the base's "
                                     f"{tuple(start[key].shape)}")
        read[name] = (start, runs)
    return read


def make_soup(base: Path, dest: Path, parts: list[tuple[Path, float]]) -> dict:
    """Write base + sum of w * (run - base) over `parts` to dest; returns what was mixed and how far it moved.
    Everything is checked before anything is written; dest is written whole or not at all (a new directory
    renamed into place), and never over the base or a run."""
    base, dest = Path(base), Path(dest)
    if not parts:
        raise ValueError("a soup needs at least one run to mix into the base")
    inputs = [base, *(run for run, _ in parts)]
    if any(dest.resolve() == d.resolve() for d in inputs):
        raise ValueError(f"{dest} is the base or one of the runs: write the soup to a new directory")
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty: write the soup to a new directory")
    want = _config(base)
    for run, _ in parts:
        if _config(run) != want:
            raise ValueError(f"{run} is not the base's kind of adapter ({base}): its adapter_config.json differs "
                             "(rank, alpha, targets)")
    read = _read(base, parts)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent if dest.parent.exists() else None))
    moved = {}
    try:
        shutil.copyfile(base / "adapter_config.json", staging / "adapter_config.json")
        for name, (start, runs) in read.items():
            out, change, norm = {}, 0.0, 0.0
            for key, value in start.items():
                if not value.is_floating_point():
                    out[key] = value.contiguous()
                    continue
                total = value.double().clone()
                for tensors, weight in runs:
                    total += weight * (tensors[key].double() - value.double())
                out[key] = total.to(value.dtype).contiguous()  # the base's storage dtype, whatever the runs'
                change += float((total - value.double()).square().sum())
                norm += float(value.double().square().sum())
            save_file(out, staging / name, metadata={"format": "pt"})
            moved[name] = (change / norm) ** 0.5 if norm else 0.0
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.rmdir()  # empty: checked above
        shutil.move(str(staging), dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"base": str(base), "dest": str(dest), "runs": [[str(run), weight] for run, weight in parts],
            "relative_change": moved}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m model.train.soup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path, help="the adapter every run was warm-started from")
    ap.add_argument("dest", type=Path, help="where to write the soup (an adapter directory)")
    ap.add_argument("runs", nargs="+", help="DIR:WEIGHT for each run to mix in (e.g. runs/x/export-ck40:0.5)")
    args = ap.parse_args(argv)
    try:
        parts = [parse_part(text) for text in args.runs]
        report = make_soup(args.base, args.dest, parts)
    except (ValueError, FileNotFoundError) as err:
        ap.error(str(err))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
