"""A3 Explorer: `python app.py [--model default|tiny|PATH] [--port N]` (also the Hugging Face Space app).

The model is loaded once, before launch, and shared by every user of the process.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

with contextlib.suppress(ImportError):  # `spaces` must come before anything initialises CUDA (ZeroGPU)
    import spaces  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=os.environ.get("A3_MODEL", "default"),
                    help="default (SmolLM2-135M + the A3 adapter), tiny (random), or a checkpoint dir / hub id")
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    from app import build
    from app.layout import launch_kwargs
    from model.loading import ModelLoadError

    try:
        demo = build(args.model, device=args.device)
    except ModelLoadError as err:
        raise SystemExit(f"error: {err}") from None
    if os.environ.get("SYSTEM") == "spaces":  # the platform sets host and port
        demo.launch(**launch_kwargs())
    else:
        demo.launch(server_name=args.host, server_port=args.port, **launch_kwargs())


if __name__ == "__main__":
    main()
