"""The page's exports do not pile up on disk: each lands in a fresh directory of the process's own folder,
and a new export deletes the ones older than a few minutes; Gradio's copies are on a deletion schedule."""

import os
import time
from pathlib import Path

import pytest

from app import downloads
from app.session import Explorer, Request
from app.ui.export_tab import ExportCallbacks

TEXT = "Once upon a time [MASK:3] lived in a house by the sea."


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_each_export_gets_a_fresh_directory_of_the_processs_private_folder():
    root = downloads.export_root()
    assert root.is_dir() and root.name.startswith("a3-exports-") and downloads.export_root() == root
    if os.name == "posix":
        assert root.stat().st_mode & 0o077 == 0  # nobody else reads or lists it
    first, second = downloads.new_path("a.json"), downloads.new_path("a.json")
    assert first.name == second.name == "a.json" and first.parent != second.parent
    assert first.parent.parent == second.parent.parent == root


def test_prune_deletes_only_what_is_older_than_the_limit(tmp_path):
    old_dir, old_file, new_dir = tmp_path / "old", tmp_path / "old.txt", tmp_path / "new"
    old_dir.mkdir()
    (old_dir / "trace.json").write_text("{}")
    old_file.write_text("x")
    new_dir.mkdir()
    age(old_dir, 700)
    age(old_file, 700)
    assert downloads.prune(tmp_path, 600) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
    assert downloads.prune(tmp_path, 600, now=time.time() + 601) == 1  # ten minutes on, the new one goes too
    assert downloads.prune(tmp_path / "missing", 600) == 0


def test_a_new_export_deletes_the_exports_older_than_keep_s(tiny_loaded):
    explorer = Explorer(tiny_loaded)
    exports = ExportCallbacks(explorer)
    result = explorer.decode(Request(text=TEXT, method="A3 plan"))
    earlier = Path(exports.trace_json(result))
    recent = Path(exports.masks_csv(result, 1))
    assert earlier.is_file() and recent.is_file()
    age(earlier.parent, downloads.KEEP_S + 60)
    latest = Path(exports.trace_json(result))
    assert latest.is_file() and recent.is_file()  # the recent one stays
    assert not earlier.parent.exists()  # the old one went, directory and all
    assert latest.read_text() == explorer.trace_json(result)  # the file is the export, whole


@pytest.mark.parametrize("name", ["", ".", "..", "a/b.json", "../x.json"])
def test_an_export_name_that_is_not_a_plain_file_name_is_refused(name):
    with pytest.raises(ValueError, match="plain file name"):
        downloads.new_path(name)


def test_the_page_deletes_gradios_copies_on_a_schedule():
    from app import build

    demo = build("tiny")
    assert demo.delete_cache == downloads.CACHE_LIFETIME
    every, older_than = downloads.CACHE_LIFETIME
    assert 0 < every <= older_than
