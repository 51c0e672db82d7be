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

Every run must have the base's rank, targets and tensor names; the soup keeps the base's adapter_config.json
and its storage dtype. Safetensors in and out, nothing else.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from model.train.export import FILES

# what must agree between the base and every run for their tensors to be added (the rank, the targets)
_SAME_CONFIG = ("r", "lora_alpha", "target_modules", "modules_to_save", "use_rslora", "use_dora")


def _config(directory: Path) -> dict:
    path = directory / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not an A3 adapter directory: missing adapter_config.json")
    config = json.loads(path.read_text())
    return {key: (sorted(v) if isinstance(v := config.get(key), list) else v) for key in _SAME_CONFIG}


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


def make_soup(base: Path, dest: Path, parts: list[tuple[Path, float]]) -> dict:
    """Write base + sum of w * (run - base) over `parts` to dest; returns what was mixed and how far it moved."""
    base, dest = Path(base), Path(dest)
    if not parts:
        raise ValueError("a soup needs at least one run to mix into the base")
    want = _config(base)
    for run, _ in parts:
        if _config(run) != want:
            raise ValueError(f"{run} is not the base's kind of adapter ({base}): its rank or targets differ")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(base / "adapter_config.json", dest / "adapter_config.json")
    moved = {}
    for name in FILES:
        start = load_file(base / name)
        runs = [(load_file(run / name), weight, run) for run, weight in parts]
        for tensors, _, run in runs:
            if tensors.keys() != start.keys():
                odd = sorted(tensors.keys() ^ start.keys())[:3]
                raise ValueError(f"{run / name} does not hold the base's tensors (first differences: {odd})")
            for key, value in tensors.items():
                if value.shape != start[key].shape:
                    raise ValueError(f"{run / name}: {key} is {tuple(value.shape)}, the base's "
                                     f"{tuple(start[key].shape)}")
        out, change, norm = {}, 0.0, 0.0
        for key, value in start.items():
            if not value.is_floating_point():
                out[key] = value.contiguous()
                continue
            total = value.double().clone()
            for tensors, weight, _ in runs:
                total += weight * (tensors[key].double() - value.double())
            out[key] = total.to(value.dtype).contiguous()
            change += float((total - value.double()).square().sum())
            norm += float(value.double().square().sum())
        save_file(out, dest / name, metadata={"format": "pt"})
        moved[name] = (change / norm) ** 0.5 if norm else 0.0
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
