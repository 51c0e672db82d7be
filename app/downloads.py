"""Where the page's exports are written, and how long they stay on disk.

An export is written once, into a directory of its own (two visitors' files of one name never meet) under
one folder the process owns (`export_root()`: a fresh `a3-exports-*` folder of the system's temporary
directory, private to this process, removed when it exits normally; a killed process leaves at most its last
minutes of exports behind). Gradio then copies the file into its cache to
serve it, so the original is needed only for a moment: each new export first deletes this folder's entries
older than `KEEP_S`. Gradio's copies go on the schedule `CACHE_LIFETIME` (`gr.Blocks(delete_cache=...)`).
A Space that runs for weeks keeps minutes of exports on disk, not every file it ever made (an animated GIF
is about 5 MB).

    path = new_path("a3-tom-wanted-to-bake-887e49-trace.json")   # <root>/<fresh dir>/<name>
    prune(export_root(), KEEP_S)                                   # what new_path does first
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from pathlib import Path

KEEP_S = 600.0  # an export's original, after Gradio has copied it (at once): 10 minutes
# Gradio's cached copies of the exports: checked every 10 minutes, deleted an hour after they were made
# (the page downloads each one the moment it is made; a later press makes it again)
CACHE_LIFETIME = (600, 3600)

_root: Path | None = None
_lock = threading.Lock()


def export_root() -> Path:
    """This process's folder of exports, made on first use (mode 0700, an unguessable name) and removed
    with everything in it when the process exits normally (atexit: not on a kill signal)."""
    global _root
    with _lock:
        if _root is None or not _root.is_dir():
            _root = Path(tempfile.mkdtemp(prefix="a3-exports-"))
            atexit.register(shutil.rmtree, _root, ignore_errors=True)
        return _root


def prune(root: Path, keep_s: float, now: float | None = None) -> int:
    """Delete the entries of `root` last changed more than `keep_s` seconds before `now` (default: the
    time now); returns how many went. An entry another thread deletes first is simply gone."""
    now = time.time() if now is None else now
    gone = 0
    for entry in list(root.iterdir()) if root.is_dir() else []:
        try:
            old = now - entry.lstat().st_mtime > keep_s
        except FileNotFoundError:
            continue
        if not old:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        gone += 1
    return gone


def new_path(name: str) -> Path:
    """A path for a new export named `name`, in a fresh directory of `export_root()`, after deleting the
    exports older than KEEP_S. `name` is a file name, not a path."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"an export's name must be a plain file name; got {name!r}")
    root = export_root()
    prune(root, KEEP_S)
    return Path(tempfile.mkdtemp(dir=root)) / name
