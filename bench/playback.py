"""Playback speed and scrubbing smoothness of the stage, measured in a real headless Chromium.

    python -m bench.playback --json [--model tiny|default] [--steps 64] [--speed 0.25]

Serves the app, runs a text with `steps` blanks (A3 plan, groups of 1: one step per blank) from the
page itself, sets the stage's speed, plays from the first step to the last and reads the browser's
own clock at each step (window.__a3stage.stats.ticks). Then drags the step slider across its whole
width with the mouse and records how long each redraw took and the longest gap between animation
frames. Prints one JSON object on its last line; asserts nothing.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

from bench import arg_parser, report

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), None)

FRAME_PROBE = """() => { const gaps = []; let last = performance.now(), on = true;
  const loop = (t) => { gaps.push(t - last); last = t; if (on) requestAnimationFrame(loop); };
  requestAnimationFrame(loop); window.__a3frames = { gaps, stop: () => { on = false; } }; }"""


def run(model: str, n_steps: int, speed: float, size: tuple[int, int] = (1366, 768)) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    from conftest import launched_app
    from playwright.sync_api import expect, sync_playwright

    text = ("Once upon a time a small boat left the harbour. " + f"[MASK:{n_steps}]"
            + " When the sun went down the sailors sang an old song and the sea was calm again.")
    with launched_app(model) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        page.goto(url)
        page.wait_for_selector("#stage .a3s")
        page.locator("button[role=tab]", has_text="Your text").first.click()
        page.locator("#text textarea").fill(text)
        page.locator("#method label", has_text="A3 plan").click()
        page.locator("#run-btn").click()
        page.wait_for_function(f"() => window.__a3stage.state.P && !window.__a3stage.state.P.empty && "
                               f"window.__a3stage.state.P.steps.length === {n_steps}", timeout=300_000)
        page.evaluate("() => window.__a3stage.pause()")
        page.locator("#stage-speed").fill(str(speed))
        page.locator("#stage-speed").dispatch_event("change")
        page.evaluate("() => { window.__a3stage.setStep(-1); window.__a3stage.stats.renders.length = 0; }")

        # playback: from "before decoding" to the last step, on the browser's clock
        page.locator("#play-btn").click()
        page.wait_for_function("() => !window.__a3stage.state.playing", timeout=int(n_steps * speed * 3000) + 30_000)
        ticks = page.evaluate("() => window.__a3stage.stats.ticks")
        play_renders = page.evaluate("() => window.__a3stage.stats.renders.slice()")
        intervals = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        real_s = (ticks[-1] - ticks[0]) / 1000
        asked_s = n_steps * speed

        # scrubbing: drag the slider end to end with the mouse, 120 moves
        page.evaluate("() => { window.__a3stage.stats.renders.length = 0; }")
        box = page.locator("#stage-step").bounding_box()
        y = box["y"] + box["height"] / 2
        page.evaluate(FRAME_PROBE)
        page.mouse.move(box["x"] + 2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] - 2, y, steps=120)
        page.mouse.up()
        page.wait_for_timeout(200)
        gaps = page.evaluate("() => { window.__a3frames.stop(); return window.__a3frames.gaps.slice(1); }")
        drag_renders = page.evaluate("() => window.__a3stage.stats.renders.slice()")
        expect(page.locator("#stage-counter")).to_have_text(f"Step {n_steps}/{n_steps}")
        length = page.evaluate("() => window.__a3stage.state.P.labels.length")
        browser.close()
    return {
        "model": model, "viewport": f"{size[0]}x{size[1]}", "tokens": length, "steps": n_steps,
        "seconds_per_step_asked": speed, "playback_asked_s": round(asked_s, 3), "playback_real_s": round(real_s, 3),
        "playback_error_pct": round(100 * (real_s - asked_s) / asked_s, 2),
        "step_interval_ms_mean": round(statistics.mean(intervals), 1),
        "step_interval_ms_max": round(max(intervals), 1), "step_interval_ms_min": round(min(intervals), 1),
        "render_ms_mean": round(statistics.mean(play_renders), 2), "render_ms_max": round(max(play_renders), 2),
        "drag_redraws": len(drag_renders), "drag_render_ms_mean": round(statistics.mean(drag_renders), 2),
        "drag_render_ms_max": round(max(drag_renders), 2),
        "drag_frame_gap_ms_max": round(max(gaps), 1) if gaps else None,
        "target": {"playback_error_pct": 20},
    }


def main(argv: list[str] | None = None) -> None:
    ap = arg_parser(__doc__)
    ap.set_defaults(model="tiny")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--speed", type=float, default=0.25, help="seconds per step")
    args = ap.parse_args(argv)
    report(run(args.model, args.steps, args.speed), as_json=args.json)


if __name__ == "__main__":
    main()
