"""Screenshots of the stage in headless Chromium (for the README and for looking at the layout).

    python -m bench.screenshot --model default --size 1366x768 --out assets/screenshot.png
    python -m bench.screenshot --url http://127.0.0.1:7861 --size 1920x1080 --present --out /tmp/p.png

Serves the app itself unless --url is given, waits until the stage has played to --step (default:
the middle of the example), pauses it there and saves the viewport. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), None)


@contextlib.contextmanager
def served(model: str, url: str | None):
    if url:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import launched_app

    with launched_app(model) as (served_url, _):
        yield served_url


def shoot(url: str, size: tuple[int, int], out: Path, *, present: bool = False, step: int | None = None,
          tab: str | None = None) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        page.goto(url)
        page.wait_for_selector("#stage .a3s")
        page.wait_for_function("() => window.__a3stage && window.__a3stage.state.P")
        total = page.evaluate("() => window.__a3stage.state.P.empty ? 0 : window.__a3stage.state.P.steps.length")
        target = (total // 2 if step is None else step) if total else -1
        page.evaluate("(s) => window.__a3stage.setStep(s)", target)
        if present:
            page.keyboard.press("p")
        if tab:
            page.locator(f"#tabs button:has-text('{tab}')").first.click()
        page.wait_for_timeout(800)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()
    return {"out": str(out), "size": list(size), "step": target, "steps": total, "present": present}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--url", default=None, help="an app already running (default: serve --model here)")
    ap.add_argument("--size", default="1366x768")
    ap.add_argument("--out", type=Path, default=Path("assets/screenshot.png"))
    ap.add_argument("--present", action="store_true", help="presentation mode")
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--tab", default=None, help="click the tab whose label contains this text first")
    args = ap.parse_args(argv)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    width, height = (int(x) for x in args.size.lower().split("x"))
    with served(args.model, args.url) as url:
        print(json.dumps(shoot(url, (width, height), args.out, present=args.present, step=args.step, tab=args.tab)))


if __name__ == "__main__":
    main()
