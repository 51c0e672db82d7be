"""The A3 explainer (Gradio). `build(model)` returns the page for one model; `python app.py` launches it.

Nothing heavy at import: gradio, torch and the model load inside `build()`.
"""

from __future__ import annotations

import logging


def gpu_decorator():
    """ZeroGPU's `spaces.GPU` (a no-op off Spaces); the identity where the package is missing."""
    try:
        import spaces
    except ImportError:  # pragma: no cover
        return lambda fn: fn
    return spaces.GPU(duration=60)


def device_note(loaded) -> str:
    """What the model runs on, in plain words: "CPU, 2 threads (float32)", "GPU: NVIDIA H100 (bfloat16)"."""
    import torch

    from model.precision import precision_note

    device, precision = loaded.device, precision_note(loaded.device, loaded.weight_dtype)
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)} ({precision})"
    threads = torch.get_num_threads()
    return f"CPU, {threads} thread{'' if threads == 1 else 's'} ({precision})"


def adapter_version(adapter_dir=None) -> str:
    """The shipped adapter's version ("v7"), from its model card's title; "" where it names none."""
    import re

    from model.loading import DEFAULT_ADAPTER

    try:
        card = ((adapter_dir or DEFAULT_ADAPTER) / "README.md").read_text(encoding="utf-8")
    except OSError:
        return ""
    found = re.search(r"^# .*\((v\d+)\)\s*$", card, re.MULTILINE)
    return found.group(1) if found else ""


def model_note(loaded) -> str:
    """Which model runs, in plain words; for the default model with its base weights by content:
    "A3 adapter v7 on SmolLM2-135M-Instruct (4-bit GGUF, unpacked, sha256 b179c9523d0e)". Other models: their
    description."""
    if loaded.name != "default":
        return loaded.description
    from model.base import base_weights

    weights = base_weights()  # the first call in the process also names them in the log, by content
    base = f"SmolLM2-135M-Instruct ({weights.kind}, sha256 {weights.short})"
    if not loaded.trained:
        return f"{base} with an untrained query stream (no A3 adapter)"
    version = adapter_version()
    return f"A3 adapter {version + ' ' if version else ''}on {base}"


def build(model: str = "default", *, device: str | None = None, queue_size: int | None = None):
    """The app for one model: a gr.Blocks, not launched. The model is loaded once, here. `queue_size`:
    app.layout.queue_size (default: A3_QUEUE_SIZE, else 64). A bad queue size, A3_SESSION_MB or A3_SESSION_TTL
    (app.memory) raises ValueError before anything loads."""
    from app.demo_trace import load_demo
    from app.layout import build_demo
    from app.layout import queue_size as checked_queue_size
    from app.memory import session_cap_bytes, session_ttl_s
    from app.session import Explorer
    from model.loading import load_model

    queue_size = checked_queue_size(queue_size)
    cap = session_cap_bytes()
    ttl = session_ttl_s()
    loaded = load_model(model, device=device)
    note = model_note(loaded)  # before anything else is logged: the default model's base weights, by content
    explorer = Explorer(loaded)
    demo = load_demo(explorer)  # the example the stage opens with: shipped, or decoded once, here
    settle()
    logging.getLogger(__name__).info("queue: at most %d events waiting; each tab's memory capped at %.3g MB, its "
                                     "runs let go when it closes or after %.0f s without an event", queue_size,
                                     cap / 2**20, ttl)
    return build_demo(explorer, device_note=device_note(loaded), model_note=note, gpu=gpu_decorator(), demo=demo,
                      max_queue=queue_size)


def settle() -> None:
    """Move everything alive after start-up (the model, torch, transformers, gradio) out of the garbage
    collector's reach: otherwise every full collection walks those millions of objects, and a step that
    happens to trigger one renders in ~300 ms instead of ~70 ms (`python -m bench.app`)."""
    import gc

    gc.collect()
    gc.freeze()
