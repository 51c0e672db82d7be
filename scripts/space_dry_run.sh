#!/usr/bin/env bash
# A Space dry run: build what the Hugging Face Space builds and check it serves, without the Space.
#
#   bash scripts/space_dry_run.sh        (make space-dry-run; KEEP=1 keeps the folder for a look,
#                                         DEBUG_TIMES=1 also says when the clean-up finished)
#
# 1. copies the repository's files (tracked, plus new ones git does not ignore: what a commit would hold)
#    into a fresh temporary folder, and makes a fresh virtual environment with the Dockerfile's Python;
# 2. runs the Dockerfile's two install steps there, scripts/space_install.sh packages and base (no Makefile,
#    no test or training packages), with the Dockerfile's environment; torch from the Dockerfile's
#    TORCH_INDEX_URL where that index answers, else from the plain pin on the package index (said so);
# 3. starts `python app.py` as the Space's CMD does: SYSTEM=spaces, host and port from the environment,
#    HF_HUB_OFFLINE=1 (no model hub: the base must come from the image);
# 4. checks it from this repository's .venv (Playwright and gradio_client): Chromium opens the page and the
#    stage plays, one decode runs from the page, one gradio_client call to /infill answers, and the header's
#    base-weights hash is the one the start-up log names;
# 5. prints one JSON line (timings in seconds, the hash) and exits 0, or non-zero with the app's log; it
#    stops the app and removes the folder either way.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHECK_PY="${CHECK_PY:-$ROOT/.venv/bin/python}"
[ -x "$CHECK_PY" ] || { echo "space dry run: $CHECK_PY is missing (run make install first)" >&2; exit 2; }
now() { date +%s.%N; }
since() { "$CHECK_PY" -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$(now)"; }

T0="$(now)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/a3-space-dry-run.XXXXXX")"
APP_PID=""
cleanup() {
  if [ -n "$APP_PID" ] && kill -0 "$APP_PID" 2>/dev/null; then  # the app this script started: TERM, then KILL
    kill "$APP_PID" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$APP_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$APP_PID" 2>/dev/null || true
    wait "$APP_PID" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "space dry run: kept $WORK" >&2; else rm -rf "$WORK"; fi
  [ -z "${DEBUG_TIMES:-}" ] || echo "space dry run: cleaned up at $(since "$T0") s" >&2
}
trap cleanup EXIT
fail() {
  echo "space dry run FAILED: $*" >&2
  if [ -f "$WORK/app.log" ]; then echo "--- the app's log (last 40 lines)" >&2; tail -n 40 "$WORK/app.log" >&2; fi
  exit 1
}

# 1. the files and a fresh environment with the Dockerfile's Python (FROM python:X.Y-...)
mkdir -p "$WORK/app"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf -) | tar -xf - -C "$WORK/app"
PY_WANT="$(sed -nE 's/^FROM python:([0-9]+\.[0-9]+).*/\1/p' "$ROOT/Dockerfile" | head -n 1)"
PYTHON="${PYTHON:-$(command -v "python$PY_WANT" || command -v python3)}"
PY_HAVE="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$PY_HAVE" = "$PY_WANT" ] || echo "space dry run: the Space builds with Python $PY_WANT, this runs $PY_HAVE" >&2
"$PYTHON" -m venv "$WORK/venv"

# 2. the Dockerfile's install steps, with its environment (pip's own download cache may serve packages)
TORCH_INDEX_URL="${TORCH_INDEX_URL-$(sed -nE 's/^ARG TORCH_INDEX_URL=(.*)$/\1/p' "$ROOT/Dockerfile")}"
TORCH_FROM="${TORCH_INDEX_URL:-the package index (plain pin)}"
if [ -n "$TORCH_INDEX_URL" ] && ! "$CHECK_PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" \
    "${TORCH_INDEX_URL%/}/torch/" >/dev/null 2>&1; then
  echo "space dry run: $TORCH_INDEX_URL does not answer from here; torch comes from the plain pin instead" >&2
  TORCH_INDEX_URL=""
  TORCH_FROM="the package index (plain pin; the Space uses the Dockerfile's index)"
fi
export PATH="$WORK/venv/bin:$PATH"
run_env=(env HOME="$WORK/home" A3_CACHE="$WORK/home/.cache/a3-explorer" HF_HOME="$WORK/home/.cache/huggingface"
         HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False
         XDG_CACHE_HOME= TORCH_INDEX_URL="$TORCH_INDEX_URL")
mkdir -p "$WORK/home"
# pip's cache stays where it is (it only makes the download faster; the Dockerfile turns it off)
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
T="$(now)"
(cd "$WORK/app" && "${run_env[@]}" bash scripts/space_install.sh packages) >"$WORK/install.log" 2>&1 \
  || { tail -n 30 "$WORK/install.log" >&2; fail "scripts/space_install.sh packages"; }
INSTALL_S="$(since "$T")"
T="$(now)"
(cd "$WORK/app" && "${run_env[@]}" bash scripts/space_install.sh base) >"$WORK/base.log" 2>&1 \
  || { cat "$WORK/base.log" >&2; fail "scripts/space_install.sh base"; }
BASE_S="$(since "$T")"

# 3. the app as the Space starts it (the Dockerfile's CMD), on a free local port given through the environment
PORT="$("$CHECK_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
T="$(now)"
(cd "$WORK/app" && exec "${run_env[@]}" SYSTEM=spaces SPACE_ID=dry-run/a3-explorer GRADIO_SERVER_NAME=127.0.0.1 \
   GRADIO_SERVER_PORT="$PORT" python app.py) >"$WORK/app.log" 2>&1 &
APP_PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 600); do
  kill -0 "$APP_PID" 2>/dev/null || fail "the app stopped while starting"
  "$CHECK_PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$URL/" 2>/dev/null && break
  sleep 1
done
"$CHECK_PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$URL/" 2>/dev/null \
  || fail "the app did not answer on $URL within 10 minutes"
START_S="$(since "$T")"

# 4. the check, from this repository's environment
LOG_SHA="$(sed -nE 's/.*base weights: .* · sha256 ([0-9a-f]{12}) \(full [0-9a-f]{64}\).*/\1/p' "$WORK/app.log" | head -n 1)"
[ -n "$LOG_SHA" ] || fail "the start-up log names no base weights (no 'base weights: ... sha256' line)"
NO_PROXY="127.0.0.1,localhost" "$CHECK_PY" - "$URL" "$LOG_SHA" <<'PY' >"$WORK/check.json" || fail "the check"
import json
import re
import sys
import time
from pathlib import Path

from gradio_client import Client
from playwright.sync_api import expect, sync_playwright

url, log_sha = sys.argv[1], sys.argv[2]
TEXT = "The cat sat on the mat and [MASK:4] at the birds in the old tree."
chromium = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), None)
out = {}
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium)
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    t = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("#stage .a3s", timeout=60_000)
    expect(page.locator("#stage-counter")).to_have_text(re.compile(r"^Step [1-9]\d*/\d+$"), timeout=30_000)
    first = int(page.locator("#stage-counter").get_attribute("data-step"))
    page.wait_for_function(f"() => Number(document.querySelector('#stage-counter').dataset.step) > {first}",
                           timeout=30_000)
    out["page_plays_s"] = round(time.perf_counter() - t, 1)
    header = page.locator("#header").inner_text()
    found = re.search(r"sha256 ([0-9a-f]{12})", header)
    out["header"] = header.strip()
    out["header_sha256"] = found.group(1) if found else None
    t = time.perf_counter()
    page.locator("button[role=tab]", has_text="Your text").first.click()
    page.locator("#text textarea").fill(TEXT)
    page.locator("#method label", has_text="A3 plan").click()
    page.locator("#run-btn").click()
    expect(page.locator(".a3s-headline")).to_contain_text("A3 plan: 4 model calls for 4 tokens", timeout=180_000)
    expect(page.locator("#stage-counter")).to_have_text("Step 4/4", timeout=60_000)
    out["page_decode_s"] = round(time.perf_counter() - t, 1)
    browser.close()
t = time.perf_counter()
filled, trace_json = Client(url, verbose=False, analytics_enabled=False).predict(TEXT, "A3 plan", 0, api_name="/infill")
out["infill_s"] = round(time.perf_counter() - t, 1)
trace = json.loads(trace_json)
assert filled.startswith("The cat sat on the mat and") and "[MASK" not in filled, filled
assert len(trace["steps"]) == 4 and trace["final_text"] == filled, trace_json[:300]
out["infill_text"] = filled
assert out["header_sha256"] == log_sha, (out["header"], log_sha)
print(json.dumps(out, ensure_ascii=False))
PY

# 5. one JSON line
"$CHECK_PY" - "$WORK/check.json" <<PY
import json, sys
check = json.load(open(sys.argv[1]))
print(json.dumps({"ok": True, "python": "$PY_HAVE", "torch_from": "$TORCH_FROM", "install_s": $INSTALL_S,
                  "base_s": $BASE_S, "start_s": $START_S, **check, "log_sha256": "$LOG_SHA",
                  "total_s": round($(since "$T0"), 1)}, ensure_ascii=False))
PY
