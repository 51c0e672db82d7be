"""A tiny hand-written corpus in the shipped format (for trainer and evaluation tests)."""

import gzip
import json
from pathlib import Path

STORIES = [
    "Mia found an old key under the porch. She tried it on every door in the house. None of them opened. "
    "Then she saw a small box in the attic. The key fit, and inside was a letter from her grandmother.",
    "Tom wanted to bake bread for his sister. He mixed the flour and the water. The dough would not rise. "
    "His neighbour gave him fresh yeast. The next loaf came out golden and warm.",
    "The bus driver waited at the corner in the rain. A boy ran toward the bus with his backpack open. "
    "Books fell into a puddle. The driver helped him pick them up. They both laughed as the bus pulled away.",
    "Ana studied late for her spelling test. Her cat sat on the open book. She read the words to the cat. "
    "In the morning she remembered every one. She got a perfect score.",
    "Two sisters built a kite on a windy day. The first one broke at once. They used lighter sticks the second "
    "time. It flew high over the park. Their father took a picture of it.",
    "A small dog lost its ball in the lake. It barked at the water for an hour. A fisherman rowed out to get it. "
    "The dog wagged its tail the whole way home.",
]


def write_corpus(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    splits = {"train": STORIES, "validation": STORIES[:2], "test": STORIES[2:5]}
    for split, stories in splits.items():
        with gzip.open(directory / f"{split}.jsonl.gz", "wt", encoding="utf-8") as fh:
            for i, text in enumerate(stories):
                fh.write(json.dumps({"id": f"{split}-{i}", "prompt": f"p{i}", "text": text}) + "\n")
    return directory
