"""A3 Explorer: `python app.py [--model default|tiny|PATH] [--port N]` (also the Hugging Face Space app).

The model is loaded once, before launch, and shared by every user of the process. Visitors never choose
a model, a file or a URL: `--model` is the operator's, and `launch()` below closes what Gradio would
otherwise open to anyone (see `Guard`).

Host and port: --host / --port, else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (or PORT), else 127.0.0.1:7860;
on a Hugging Face Space (SYSTEM=spaces) the host defaults to 0.0.0.0, as the Space's Dockerfile also sets.

Many visitors: --queue-size N (else A3_QUEUE_SIZE, else 64) events wait at once, every visitor's together;
one more is refused at once ("This application is currently busy. Please try again." on the page,
QueueError "Queue is full! Please try again." in gradio_client), never left hanging. --session-mb MB (else
A3_SESSION_MB, else 192) caps what one browser tab keeps (app.memory; per tab, so 20 tabs at most ~3.8 GB):
past it the least recently used branch caches are dropped, never the branches, and the page says so; a
dropped cache is rebuilt in one model call. --session-ttl S (else A3_SESSION_TTL, else 1800): a tab's runs
are let go when it closes, or after S seconds without an event (app.ui.sessions). Memory: the C library's
malloc is held to 2 arenas (app.memory.cap_arenas; A3_MALLOC_ARENAS=N, 0 for its default), so what the
visitors freed goes back to the system.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

with contextlib.suppress(ImportError):  # `spaces` must come before anything initialises CUDA (ZeroGPU)
    import spaces  # noqa: F401

ROOT = Path(__file__).resolve().parent

# Gradio's file route (`/gradio_api/file=<path or URL>`, and the older `/file/<...>`) followed by a URL:
# Gradio would fetch any public URL and send it on. Paths are left to Gradio, which serves only its own
# cache (the app's exports) and refuses everything else.
_FILE_URL = re.compile(r"/file[=/]\s*(?:[a-z][a-z0-9+.\-]*:|//|\\\\|\\/|/\\)", re.IGNORECASE)
_UPLOAD = re.compile(r"/upload/?$")
_PROXY = re.compile(r"/proxy=")  # Gradio's proxy to the Spaces an app loads (gr.load): this one loads none


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware in front of Gradio's routes. It refuses what this app never needs and a visitor
    could misuse: the file route fetching a URL (the server would fetch any public URL for anyone), the
    proxy route (for Spaces loaded with gr.load; none here), the upload route (the page takes no files;
    an upload is kept on the server's disk), and a request body over app.session.MAX_REQUEST_BYTES
    (refused as it arrives, before Gradio reads it all)."""

    def __init__(self, app, max_body: int | None = None):
        from app.session import MAX_REQUEST_BYTES

        self.app, self.max_body = app, max_body or MAX_REQUEST_BYTES

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if _FILE_URL.search(path) or _PROXY.search(path):
            await self.refuse(scope, receive, send, 403, "File not allowed: this app serves no URLs.")
            return
        if scope.get("method") == "POST" and _UPLOAD.search(path):
            await self.refuse(scope, receive, send, 403, "Uploads are not allowed: this app takes no files.")
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            await self.refuse(scope, receive, send, 413, self.too_large)
            return
        received, started = 0, False

        async def counted():  # a body sent without Content-Length (chunked) is counted as it comes
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self.refuse(scope, receive, send, 413, self.too_large)

    @property
    def too_large(self) -> str:
        return f"Request too large: at most {self.max_body:,} bytes."

    @staticmethod
    async def refuse(scope, receive, send, status: int, message: str) -> None:
        from starlette.responses import PlainTextResponse

        await PlainTextResponse(message, status_code=status)(scope, receive, send)


def launch_kwargs() -> dict:
    """app.layout's launch settings (the page's theme, CSS, head, footer), and what a public Space needs
    closed: `Guard` in front of every route; the app's own source and the model caches on Gradio's block
    list (Gradio serves none of them anyway; this keeps it so whatever else is allowed later); no run
    history (its routes would call the Hugging Face Hub with a visitor's token) and no MCP server."""
    from starlette.middleware import Middleware

    from app.layout import launch_kwargs as page_kwargs
    from model.base import cache_root

    home = Path.home() / ".cache"
    hf_home = Path(os.environ.get("HF_HOME") or home / "huggingface")
    blocked = [ROOT / "app", ROOT / "model", ROOT / "assets", ROOT / "runs", ROOT / "app.py", hf_home,
               home / "a3-explorer", cache_root()]
    return {**page_kwargs(), "app_kwargs": {"middleware": [Middleware(Guard)]},
            "blocked_paths": [str(p) for p in blocked], "run_history": False, "mcp_server": False}


def launch(demo, **where):
    """Launch `demo` as the Space does; `where`: server_name, server_port, prevent_thread_lock, ... Named
    API endpoints go through the queue only (as on Spaces, where Gradio closes the direct REST routes):
    the model events' one-at-a-time limit holds for every caller."""
    demo.api_open = False
    return demo.launch(**where, **launch_kwargs())


def on_space() -> bool:
    """Whether this process runs as a Hugging Face Space (the platform sets SYSTEM=spaces)."""
    return os.environ.get("SYSTEM") == "spaces"


def default_host() -> str:
    return os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space() else "127.0.0.1")


def default_port() -> int:
    return int(os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or 7860)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("A3_MODEL", "default"),
                    help="default (SmolLM2-135M + the A3 adapter), tiny (random), or a checkpoint dir / hub id")
    ap.add_argument("--port", type=int, default=default_port())
    ap.add_argument("--host", default=default_host())
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--queue-size", default=None, metavar="N",
                    help="events that may wait at once (default: A3_QUEUE_SIZE, else 64); past it a visitor is told "
                         "at once that the app is busy")
    ap.add_argument("--session-mb", default=None, metavar="MB",
                    help="memory one browser tab may keep, in MB (default: A3_SESSION_MB, else 192); past it the "
                         "least recently used branch caches are dropped (never the branches) and rebuilt in one "
                         "call when needed")
    ap.add_argument("--session-ttl", default=None, metavar="S",
                    help="seconds without an event after which a tab's runs are let go (default: A3_SESSION_TTL, "
                         "else 1800); a closed tab's go at once")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    from app.memory import arenas_in_effect, cap_arenas

    try:  # first, before torch and Gradio start threads (each would get an arena of its own)
        cap_arenas()
    except ValueError as err:
        ap.error(str(err))
    logging.getLogger("app").info("malloc arenas: %s", arenas_in_effect())

    from app import build
    from app.layout import QUEUE_SIZE_ENV, queue_size
    from app.memory import SESSION_MB_ENV, SESSION_TTL_ENV, session_cap_bytes, session_ttl_s
    from model.base import BaseModelMissing
    from model.loading import ModelLoadError

    try:  # checked here, flags and environment alike, before anything loads; build() and every tab read them
        # from the environment, as a Space's variables
        if args.queue_size is not None:
            os.environ[QUEUE_SIZE_ENV] = str(queue_size(args.queue_size))
        if args.session_mb is not None:
            session_cap_bytes({SESSION_MB_ENV: args.session_mb})
            os.environ[SESSION_MB_ENV] = args.session_mb
        if args.session_ttl is not None:
            session_ttl_s({SESSION_TTL_ENV: args.session_ttl})
            os.environ[SESSION_TTL_ENV] = args.session_ttl
        queue_size(), session_cap_bytes(), session_ttl_s()  # the environment's own values, when no flag is given
    except ValueError as err:
        ap.error(str(err))
    try:
        demo = build(args.model, device=args.device)
    except (ModelLoadError, BaseModelMissing) as err:  # e.g. the base weights are not installed: say so, stop
        raise SystemExit(f"error: {err}") from None
    launch(demo, server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
