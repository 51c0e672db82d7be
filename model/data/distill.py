"""Distil a corpus of short stories from the base model (SmolLM2-135M-Instruct).

    python -m model.data.distill --out runs/corpus --max-minutes 60      # generate (resumable)
    python -m model.data.distill --out runs/corpus --finalize            # dedupe, split, compress + card

The prompts form a seeded grid: topics x characters x settings x tones. Each prompt yields one story;
a story is kept only if it is clean English prose of 3-8 complete sentences and 60-250 tokens, with no
chat boilerplate and no repeated sentences. The split (train / validation / test) is a hash of the
prompt, so no prompt crosses splits. Generation appends to `raw.jsonl` and records its progress, so a
run can stop at `--max-minutes` and a later run continues where it left off.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from model.data.stories import CORPUS_DIR, SPLITS, split_sentences

TOPICS = [
    "a lost key", "a birthday surprise", "a rainy afternoon", "a new friend", "a broken bicycle",
    "a school play", "a vegetable garden", "a summer storm", "a long train ride", "a cooking mistake",
    "a missing pet", "a secret note", "a first day at work", "a camping trip", "a football match",
    "a letter from far away", "a snow day", "a science fair", "a piano lesson", "a fishing trip",
    "a lost wallet", "a power cut", "moving to a new house", "a visit to the doctor", "a spelling test",
    "a flat tire", "a kite on a windy day", "an old photograph", "a job interview", "a family dinner",
    "a lost glove", "a noisy neighbour",
]
CHARACTERS = [
    "a girl named Mia", "an old fisherman", "a shy boy named Leo", "a baker named Rosa", "a nurse",
    "a farmer named Tom", "two sisters", "a grandmother", "a teacher named Mr. Hale", "a small dog",
    "a curious cat", "a new student", "a mail carrier", "a firefighter", "a painter named Ivy",
    "a retired sailor", "twin brothers", "a librarian", "a young chef", "a truck driver",
    "a college student named Ana", "a boy named Sam and his father", "a girl named Lucy", "a bus driver",
]
SETTINGS = [
    "in a small village", "in a big city", "at the beach", "in the mountains", "on a farm", "at school",
    "in a forest", "on a train", "in a hospital", "at a market", "in a quiet town", "on an island",
    "in an old house", "at a park", "by a lake", "at a library",
]
TONES = ["happy", "funny", "gentle", "hopeful", "surprising", "calm", "a little sad but warm", "exciting"]

PROMPT = (
    "Write a short story of five sentences about {character} and {topic}, {setting}. "
    "Make it {tone}. Use simple everyday English. Write only the story: no title, no list, no questions."
)

# Lines or phrases that mark chat boilerplate rather than story text.
_BOILERPLATE = re.compile(
    r"(here is|here's|sure[,!]|certainly|i hope you|as an ai|i'm sorry|i can't|title:|the end\b|"
    r"\bstory:|once upon a time in a|<\|im_|\*\*|#|\bchapter\b)",
    re.IGNORECASE,
)

MIN_SENTENCES, MAX_SENTENCES = 3, 8
MIN_TOKENS, MAX_TOKENS = 60, 250


@dataclass(frozen=True)
class Prompt:
    index: int
    key: str  # "topic|character|setting|tone": the unit of the split
    text: str


def prompt_grid(seed: int) -> list[Prompt]:
    """Every prompt of the grid, in a seeded random order."""
    combos = list(itertools.product(TOPICS, CHARACTERS, SETTINGS, TONES))
    random.Random(seed).shuffle(combos)
    return [
        Prompt(i, "|".join((t, c, s, o)), PROMPT.format(topic=t, character=c, setting=s, tone=o))
        for i, (t, c, s, o) in enumerate(combos)
    ]


def split_of(prompt_key: str) -> str:
    """90 / 5 / 5 by a stable hash of the prompt: the same prompt always lands in the same split."""
    bucket = int(hashlib.sha256(prompt_key.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def clean_story(text: str, count_tokens) -> str | None:
    """The story as one line of complete sentences, or None if it is not usable."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or any(_BOILERPLATE.search(ln) for ln in lines):
        return None
    story = " ".join(lines)
    if sum(ch.isascii() for ch in story) < 0.98 * len(story):
        return None
    sentences = split_sentences(story)
    # Generation may stop mid-sentence: drop a last piece that does not end like a sentence.
    if sentences and not re.search(r"[.!?][\"')\]]*$", sentences[-1]):
        sentences = sentences[:-1]
    sentences = sentences[:MAX_SENTENCES]
    if len(sentences) < MIN_SENTENCES:
        return None
    normalized = [re.sub(r"\W+", " ", s.lower()).strip() for s in sentences]
    if len(set(normalized)) < len(normalized) or any(len(s.split()) < 3 for s in normalized):
        return None
    words = " ".join(normalized).split()
    if len(set(words)) < 0.4 * len(words):  # loops and lists
        return None
    story = " ".join(sentences)
    if not MIN_TOKENS <= count_tokens(story) <= MAX_TOKENS:
        return None
    return story


# --------------------------------------------------------------------------------------------------
# generation


def generate(out: Path, *, seed: int, batch_size: int, max_minutes: float, max_prompts: int | None,
             temperature: float, top_p: float, dtype: str, threads: int | None) -> dict:
    import torch

    from model.base import load_base_causal_lm

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model, tokenizer = load_base_causal_lm(dtype=torch_dtype, device=device)
    tokenizer.padding_side = "left"
    prompts = prompt_grid(seed)
    if max_prompts is not None:
        prompts = prompts[:max_prompts]

    out.mkdir(parents=True, exist_ok=True)
    progress_file = out / "progress.json"
    progress = json.loads(progress_file.read_text()) if progress_file.exists() else {"next": 0, "kept": 0}
    start, deadline = time.time(), time.time() + 60 * max_minutes
    # One seed per resume point: a resumed run does not repeat the samples of the previous one.
    torch.manual_seed(seed * 1_000_003 + progress["next"])
    count = lambda s: len(tokenizer(s).input_ids)  # noqa: E731

    with (out / "raw.jsonl").open("a", encoding="utf-8") as raw:
        while progress["next"] < len(prompts) and time.time() < deadline:
            batch = prompts[progress["next"] : progress["next"] + batch_size]
            chats = [
                tokenizer.apply_chat_template([{"role": "user", "content": p.text}], tokenize=False,
                                              add_generation_prompt=True)
                for p in batch
            ]
            enc = tokenizer(chats, return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=MAX_TOKENS + 40, do_sample=True,
                                     temperature=temperature, top_p=top_p, repetition_penalty=1.1,
                                     pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(gen[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
            for prompt, text in zip(batch, texts, strict=True):
                story = clean_story(text, count)
                if story is not None:
                    progress["kept"] += 1
                    raw.write(json.dumps({"prompt_index": prompt.index, "prompt": prompt.key,
                                          "text": story}) + "\n")
            raw.flush()
            progress["next"] += len(batch)
            progress_file.write_text(json.dumps(progress))
            rate = progress["next"] / max(time.time() - start, 1e-9)
            print(f"prompts {progress['next']}/{len(prompts)}  kept {progress['kept']}  "
                  f"({rate:.2f} prompts/s)", flush=True)
    return progress


# --------------------------------------------------------------------------------------------------
# finalize: dedupe, split, compress, data card


def finalize(out: Path, dest: Path, *, seed: int, settings: dict) -> dict:
    from model.base import load_base_causal_lm

    _, tokenizer = load_base_causal_lm()
    records, seen = [], set()
    for line in (out / "raw.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        fingerprint = re.sub(r"\W+", " ", rec["text"].lower()).strip()
        first = fingerprint[:60]
        if fingerprint in seen or first in seen:
            continue
        seen.update((fingerprint, first))
        records.append(rec)

    dest.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        rows = [r for r in records if split_of(r["prompt"]) == split]
        n_tokens = sum(len(tokenizer(r["text"]).input_ids) for r in rows)
        n_sentences = sum(len(split_sentences(r["text"])) for r in rows)
        with gzip.open(dest / f"{split}.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
            for n, r in enumerate(rows):
                fh.write(json.dumps({"id": f"{split}-{n:06d}", "prompt": r["prompt"], "text": r["text"]}) + "\n")
        counts[split] = {"stories": len(rows), "tokens": n_tokens, "sentences": n_sentences,
                         "bytes_gz": (dest / f"{split}.jsonl.gz").stat().st_size}
    progress = json.loads((out / "progress.json").read_text())
    card = {"seed": seed, "prompts_tried": progress["next"], "kept_before_dedup": progress["kept"],
            "kept_after_dedup": len(records), "splits": counts, **settings}
    (dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m model.data.distill", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/corpus"), help="working directory (raw + progress)")
    ap.add_argument("--dest", type=Path, default=CORPUS_DIR, help="where --finalize writes the splits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-minutes", type=float, default=60.0)
    ap.add_argument("--max-prompts", type=int, default=None, help="use only the first N prompts of the grid")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--finalize", action="store_true", help="dedupe, split and compress what was generated")
    args = ap.parse_args(argv)
    if args.finalize:
        settings = {"temperature": args.temperature, "top_p": args.top_p, "repetition_penalty": 1.1,
                    "prompt_template": PROMPT, "grid": [len(TOPICS), len(CHARACTERS), len(SETTINGS), len(TONES)]}
        print(json.dumps(finalize(args.out, args.dest, seed=args.seed, settings=settings)))
    else:
        print(json.dumps(generate(args.out, seed=args.seed, batch_size=args.batch_size,
                                  max_minutes=args.max_minutes, max_prompts=args.max_prompts,
                                  temperature=args.temperature, top_p=args.top_p, dtype=args.dtype,
                                  threads=args.threads)))


if __name__ == "__main__":
    main()
