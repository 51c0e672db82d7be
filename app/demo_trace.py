"""The example the page opens with, decoded ahead of time so the first visit moves at once.

    python -m app.demo_trace            # re-decode with the default model, write assets/demo_trace.json

Run it again whenever the default model (assets/a3-smollm2-135m) changes: the file records a
fingerprint of the adapter, tests/test_demo_trace.py fails while the two disagree, and the app
decodes the example at start-up instead of showing a stale trace. For any other model (the tiny
test model, a checkpoint of your own) the app decodes the example once at start-up. Either way the
model never runs when a page loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

from app.session import NO_REPEAT, Explorer, Request, Result
from model.decoding import DecodeTrace
from model.repeats import RULE
from model.rerank import BestOfN, candidates_with

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
PATH = ROOT / "assets" / "demo_trace.json"

# The page's default decoder (model.eval.infill.DEFAULT_METHOD, app.ui.text_tab.EXAMPLES[0]): A3 best of N,
# the decode of the six the model itself finds most likely; the record keeps every candidate, so the first
# visit counts every call and any candidate can go onto the stage. A blank of 14 tokens (the size bench.app
# times): the fill this model keeps is one whole sentence that leads to the text after it ("He had to make it
# himself, but he didn't have time." with v17); at other lengths it may stop mid-sentence (docs/evaluation.md). With
# the page's no-repeat rule, as every run of the page.
DEMO_TEXT = ("Tom wanted to bake a cake for his mom. [MASK:14] When she came home, she hugged him and said "
             "thank you.")
DEMO_REQUEST = {
    "text": DEMO_TEXT,
    "method": "A3 best of N", "order": "left to right", "group_size": 1, "strategy": "confidence", "k": 1,
    "no_repeat": NO_REPEAT,
}


def model_fingerprint(name: str) -> str:
    """A short hash of the default model's adapter files ("" for other models)."""
    if name != "default":
        return ""
    from model.loading import DEFAULT_ADAPTER

    digest = hashlib.sha256()
    for path in sorted(DEFAULT_ADAPTER.glob("*.safetensors")) + [DEFAULT_ADAPTER / "adapter_config.json"]:
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def demo_record(explorer: Explorer) -> dict:
    """Decode the example and return what the JSON file holds."""
    loaded = explorer.loaded
    result = explorer.decode(Request(**DEMO_REQUEST))
    explorer.preview_all(result)  # every step's candidates in the file (a no-op for dynamic decoding)
    return {
        "request": DEMO_REQUEST, "model": loaded.name, "fingerprint": model_fingerprint(loaded.name),
        "rule": RULE, "method": result.method, "text": result.text, "labels": result.labels,
        "vocab": {str(k): v for k, v in sorted(result.vocab.items())},
        "trace": result.trace.to_dict(loaded.tokenizer),
        **({"best_of_n": result.best_of_n.to_dict(loaded.tokenizer)} if result.best_of_n is not None else {}),
    }


def result_from_record(record: dict) -> Result:
    trace = DecodeTrace.from_dict(record["trace"])
    trace.settings.setdefault("method", record["method"])
    found = BestOfN.from_dict(record["best_of_n"]) if "best_of_n" in record else None
    return Result(trace, list(record["labels"]), {int(k): v for k, v in record["vocab"].items()},
                  record["method"], record["text"], record["model"], best_of_n=found)


def read_record(path: Path = PATH) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def matches(record: dict, explorer: Explorer) -> bool:
    """The shipped trace belongs to this model, this tokenizer and today's request."""
    loaded = explorer.loaded
    if record.get("model") != loaded.name or record.get("fingerprint") != model_fingerprint(loaded.name):
        return False
    if record.get("request") != DEMO_REQUEST:  # made with other settings (e.g. before the no-repeat rule)
        return False
    if record.get("best_of_n") is not None and not same_candidates(record["best_of_n"]):
        return False  # best of N then decoded other candidates than it does today
    if NO_REPEAT and record.get("rule") != RULE:
        return False  # decoded under another version of the no-repeat rule
    try:
        ids = explorer.picker_from_text(record["request"]["text"])["ids"]
    except Exception:  # noqa: BLE001 - any failure means: do not trust the file
        return False
    plan = record["trace"]["plan"]
    layout = explorer.layout(record["request"]["text"])
    if plan.get("layout") != (layout.to_dict() if layout else None):
        return False  # decoded without the text's layout (model.layout), or with another
    return len(ids) == len(plan["token_ids"]) and all(
        a == b for a, b, given in zip(ids, plan["token_ids"], plan["given"], strict=True) if given)


def same_candidates(found: dict) -> bool:
    """Whether a recorded best of N (BestOfN.to_dict) decoded the candidates the page decodes today: the
    same names and configs, in the same order."""
    today = [[name, config.to_dict()] for name, config in candidates_with(NO_REPEAT)]
    try:
        return [[c["name"], c["config"]] for c in found["candidates"]] == today
    except (KeyError, TypeError):
        return False


# what the first visit reads under the headline: where the example came from and, in plain words, what it shows
EXAMPLE_NOTE = ("A3 fills a text's blanks in any order, one group of tokens a step, each seeing only the given text "
                "and earlier steps. Decoded ahead of time; ✎ your text runs your own.")


def load_demo(explorer: Explorer, path: Path = PATH) -> tuple[Result | None, str]:
    """(the example's result, a note saying where it came from); (None, why) when there is none."""
    record = read_record(path)
    if record is not None and matches(record, explorer):
        return result_from_record(record), EXAMPLE_NOTE
    if record is not None and explorer.loaded.name == "default":
        log.warning("%s is stale for the current default model; decoding the example now "
                    "(regenerate it with `python -m app.demo_trace`)", path)
    try:
        result = explorer.decode(Request(**DEMO_REQUEST))
    except Exception as err:  # noqa: BLE001 - the page still opens, with an empty stage that says what to do
        log.warning("could not decode the example at start-up: %s", err)
        return None, ""
    return result, "Example decoded at start-up: press ✎ your text to run your own."  # short: beside the headline


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=PATH)
    args = ap.parse_args(argv)
    from model.loading import load_model

    explorer = Explorer(load_model(args.model, device="cpu"))
    record = demo_record(explorer)
    args.out.write_text(json.dumps(record, indent=None, separators=(",", ":")) + "\n")
    steps = record["trace"]["steps"]
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB): {record['method']}, {len(steps)} steps, "
          f"{record['text']!r}")


if __name__ == "__main__":
    main()
