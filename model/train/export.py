"""Copy a trained A3 adapter into a shippable directory, storing its tensors in half precision.

    python -m model.train.export runs/cpu-a3/final assets/a3-smollm2-135m

The trainer writes float32 tensors; the app merges the adapter into a float32 (CPU) or bf16 (GPU) base,
so float16 storage halves the size of `assets/` at a cost far below the bf16 rounding a GPU applies
anyway (`max_abs_error` in the printed JSON). Only adapter_config.json and the two safetensors files are
copied: no pickle, nothing else.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FILES = ("adapter_model.safetensors", "a3_extra.safetensors")


def export_adapter(src: Path, dest: Path, dtype: torch.dtype = torch.float16) -> dict:
    """Write src's adapter to dest with floating tensors cast to dtype; returns sizes and the rounding error."""
    src, dest = Path(src), Path(dest)
    missing = [name for name in (*FILES, "adapter_config.json") if not (src / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{src} is not an A3 adapter directory: missing {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "adapter_config.json", dest / "adapter_config.json")
    worst, sizes = 0.0, {}
    for name in FILES:
        tensors = load_file(src / name)
        cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
        for key, value in tensors.items():
            if value.is_floating_point() and value.numel():
                worst = max(worst, (cast[key].float() - value.float()).abs().max().item())
        save_file(cast, dest / name, metadata={"format": "pt"})
        sizes[name] = (dest / name).stat().st_size
    return {"src": str(src), "dest": str(dest), "dtype": str(dtype).removeprefix("torch."), "bytes": sizes,
            "max_abs_error": worst}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m model.train.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="an adapter directory written by model.train (e.g. runs/x/final)")
    ap.add_argument("dest", type=Path, help="where to write it (e.g. assets/a3-smollm2-135m)")
    ap.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    args = ap.parse_args(argv)
    print(json.dumps(export_adapter(args.src, args.dest, getattr(torch, args.dtype))))


if __name__ == "__main__":
    main()
