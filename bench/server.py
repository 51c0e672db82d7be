"""`python app.py` started on a free localhost port for a benchmark, and stopped after it (one place for the
benchmarks that talk to a served app: bench.load, bench.startup)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fuzz_api import free_port

ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL = 2000  # characters of the app's log shown when it fails to start


@contextlib.contextmanager
def served_app(model: str, timeout: float = 900, *, queue_size: int | None = None, session_mb: float | None = None,
               poll_s: float = 1.0, env: dict | None = None):
    """`python app.py --model MODEL [--queue-size N] [--session-mb MB]` on a free localhost port; yields
    (url, pid, started) once `/config` answers, `started` being the time.perf_counter() of the process start.
    A start that fails raises RuntimeError with the end of the app's log."""
    import httpx

    port = free_port()
    extra = [*(["--queue-size", str(queue_size)] if queue_size is not None else []),
             *(["--session-mb", str(session_mb)] if session_mb is not None else [])]
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(port),
                                   "--host", "127.0.0.1", *extra], cwd=ROOT,
                                  env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})},
                                  stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        def failed(why: str) -> RuntimeError:
            log.flush()
            log.seek(0)
            return RuntimeError(f"{why}; the end of its log:\n{log.read()[-LOG_TAIL:]}")

        try:
            deadline = started + timeout
            while True:
                if server.poll() is not None:
                    raise failed(f"`python app.py --model {model}` exited with {server.returncode} before serving")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/config", timeout=5).status_code == 200:
                        break
                if time.perf_counter() > deadline:
                    raise failed(f"the app did not answer on {url} within {timeout:.0f} s")
                time.sleep(poll_s)
            yield url, server.pid, started
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=30)
            if server.poll() is None:
                server.kill()
