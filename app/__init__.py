"""The A3 explainer (Gradio). `build(model)` returns the page for one model; `python app.py` launches it.

Nothing heavy at import: gradio, torch and the model load inside `build()`.
"""

from __future__ import annotations


def gpu_decorator():
    """ZeroGPU's `spaces.GPU` (a no-op off Spaces); the identity where the package is missing."""
    try:
        import spaces
    except ImportError:  # pragma: no cover
        return lambda fn: fn
    return spaces.GPU(duration=60)


def device_note(loaded) -> str:
    import torch

    from model.precision import precision_note

    device, precision = loaded.device, precision_note(loaded.device, loaded.dtype)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({precision})"
    return f"CPU, {torch.get_num_threads()} threads ({precision})"


def build(model: str = "default", *, device: str | None = None):
    """The app for one model: a gr.Blocks, not launched. The model is loaded once, here."""
    from app.demo_trace import load_demo
    from app.layout import build_demo
    from app.session import Explorer
    from model.loading import load_model

    loaded = load_model(model, device=device)
    explorer = Explorer(loaded)
    demo = load_demo(explorer)  # the example the stage opens with: shipped, or decoded once, here
    settle()
    return build_demo(explorer, device_note=device_note(loaded), gpu=gpu_decorator(), demo=demo)


def settle() -> None:
    """Move everything alive after start-up (the model, torch, transformers, gradio) out of the garbage
    collector's reach: otherwise every full collection walks those millions of objects, and a step that
    happens to trigger one renders in ~300 ms instead of ~70 ms (`python -m bench.app`)."""
    import gc

    gc.collect()
    gc.freeze()
