"""Evaluate an A3 model on stories and on general text; prints one JSON object on its last line.

    python -m model.eval --json                     # the default model: the story test split + the general split
    python -m model.eval --json --limit 10 --general-limit 30 --model runs/a3-train/final

Perplexities (exact likelihoods, start token excluded):
    ppl_base_ar        the base AR model, left to right
    ppl_a3_ar_order    the A3 model under left-to-right grouping
    ppl_a3_random_s4   the A3 model under random groups of 4 in random order (seeded)
Infilling, greedy, the blank's length given. Stories: one whole sentence masked (as in the paper's
ROCStories task). General text (assets/general, human-written, never used to train the adapter; the
base model may well have seen such text in pretraining): the middle 40% of
the tokens of one sentence masked, the sentence alone. Methods:
    a3_plan            the A3 model, the blank decoded left to right, one token per step, both sides given
    a3_outside_in      the same, in the outside-in order: the blank's two ends first, then inwards
    a3_dynamic         the A3 model, dynamic decoding by confidence, one token per step
    diffusion          masked diffusion with the A3 model: every step predicts every blank from all
                       known tokens (given + revealed, one bidirectional group), reveals the most
                       confident one and feeds it back (diffusion_k2: two per step)
    one_step_parallel  every blank predicted from the given tokens only, reveals never fed back
    ar_prefix          the base AR model from the prefix only, cut to the blank's length
    a3_prefix_only     the A3 model, left to right, with the text after the blank removed
Scores per method: ROUGE-1/2/L F1 x 100 of the fill against the original (Google's rouge-score,
stemming on); suffix_nll, the base AR model's mean NLL per token of the text after the blank given
the text before it and the fill (lower: the fill leads into what follows; `reference` is the original's);
and text_nll, the same over the fill and the text after it together (a degenerate fill that merely ends a
sentence gets a low suffix_nll but pays for itself here); ends_sentence, the % of fills whose text ends
in . ! or ? (a masked story sentence always does; `reference` gives the rate of the originals).

How much a mean can be trusted (a split of ~50 blanks is small): `rougeL_ci95` and `suffix_nll_ci95`,
the 95% bootstrap interval of each method's mean (2,000 resamples of the examples, seeded), and
`infill_paired["<a3 method>-<baseline>"]`, the mean per-example difference of the A3 method minus the
baseline on the same blanks, with its own interval: an interval that holds 0 means the split does not tell
the two apart. `--per-example` adds each method's per-example rougeL and suffix_nll lists (and the story
of each), for comparing two models on the same blanks afterwards (`paired_difference`).
`--blanks-per-story N` masks N different sentences of each story, one example each, for narrower
intervals (at best √N narrower: blanks of one story are correlated, so the intervals resample whole
stories); the first blank of each story is the default's. Its means weight a story by its blanks (a
three-sentence story gives two) and cover more sentence positions, so they are a different quantity from
the default run's: compare runs made with the same N.
`--compare A.json B.json` pairs two such runs (each made with --per-example, on the same blanks: checked)
and prints B minus A for every method both hold, with clustered intervals; nothing is loaded or decoded.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from model.decoding import causal_log_probs, collect, run_decoder, sequence_log_likelihood
from model.plans import make_plan, sample_training_groups
from model.stories import read_stories, split_sentences

METHODS = ("a3_plan", "a3_outside_in", "a3_dynamic", "diffusion", "one_step_parallel", "ar_prefix",
           "a3_prefix_only")
EXTRA_METHODS = ("diffusion_k2",)  # on request (--methods): another full recompute per two tokens
BASE_METHODS = ("ar_prefix",)  # need the base AR model
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
A3_METHODS = ("a3_plan", "a3_outside_in", "a3_dynamic")  # compared, paired, with every baseline present
BASELINES = ("diffusion", "diffusion_k2", "one_step_parallel", "ar_prefix", "a3_prefix_only")
RESAMPLES = 2000


# --------------------------------------------------------------------------------------------------
# likelihoods


def ar_log_likelihood(base, token_ids) -> float:
    """log p(x_1..n | x_0) under the base AR model."""
    return float(causal_log_probs(base, token_ids).sum())


def continuation_nll(base, prefix: list[int], fill: list[int], suffix: list[int]) -> tuple[float, float]:
    """(suffix_nll, text_nll) under the base AR model, from one forward pass: the mean NLL per token of
    `suffix` given `prefix + fill`, and of `fill + suffix` given `prefix` (nan where empty)."""
    if not suffix and not fill:
        return float("nan"), float("nan")
    logp = causal_log_probs(base, prefix + fill + suffix)
    after = len(fill) + len(suffix)
    suffix_part = float(-logp[-len(suffix):].mean()) if suffix else float("nan")
    return suffix_part, float(-logp[-after:].mean())


def suffix_nll(base, prefix: list[int], fill: list[int], suffix: list[int]) -> float:
    """Mean NLL per token of `suffix` given `prefix + fill` under the base AR model (nan if no suffix)."""
    return continuation_nll(base, prefix, fill, suffix)[0]


# --------------------------------------------------------------------------------------------------
# infilling examples: ids, which are given, and the blank's span


def _example(prefix: list[int], middle: list[int], suffix: list[int], reference: str) -> dict:
    ids = prefix + middle + suffix
    given = torch.ones(len(ids), dtype=torch.bool)
    given[len(prefix) : len(prefix) + len(middle)] = False
    return {"ids": torch.tensor(ids), "given": given, "reference": reference,
            "span": (len(prefix), len(prefix) + len(middle)), "prefix": prefix, "suffix": suffix}


def infill_example(tokenizer, start_id: int, text: str, rng: torch.Generator, k: int | None = None) -> dict | None:
    """Mask one sentence (not the first: there is always a prefix) as a blank of its exact length: the
    k-th, or one drawn with `rng`."""
    sentences = split_sentences(text)
    if len(sentences) < 3:
        return None
    if k is None:
        k = int(torch.randint(1, len(sentences), (1,), generator=rng))
    before, target, after = " ".join(sentences[:k]), " " + sentences[k], " ".join(sentences[k + 1 :])
    prefix = [start_id] + tokenizer(before, add_special_tokens=False).input_ids
    middle = tokenizer(target, add_special_tokens=False).input_ids
    suffix = tokenizer(" " + after, add_special_tokens=False).input_ids if after else []
    return {**_example(prefix, middle, suffix, target.strip()), "sentence": k}


def story_blanks(tokenizer, start_id: int, text: str, rng: torch.Generator, n: int = 1,
                 extra_rng: torch.Generator | None = None) -> list[dict]:
    """Up to n blanks of one story, each a different sentence, each its own example. The first is drawn
    with `rng` exactly as with n = 1 (so the default evaluation never changes); the others with
    `extra_rng`, which leaves `rng`'s stream (and the perplexities drawn from it) as it was."""
    if n > 1 and extra_rng is None:
        raise ValueError("several blanks per story need their own generator (extra_rng), for reproducible draws")
    first = infill_example(tokenizer, start_id, text, rng)
    if first is None or n <= 1:
        return [first] if first is not None else []
    sentences = split_sentences(text)
    others = [k for k in (torch.randperm(len(sentences) - 1, generator=extra_rng) + 1).tolist()
              if k != first["sentence"]]
    return [first] + [infill_example(tokenizer, start_id, text, rng, k) for k in others[: n - 1]]


def middle_infill_example(tokenizer, start_id: int, sentence: str) -> dict | None:
    """Mask the middle 40% of a sentence's tokens (the sentence alone is the context)."""
    from model.general import middle_span

    tokens = tokenizer(sentence, add_special_tokens=False).input_ids
    if len(tokens) < 5:
        return None
    lo, hi = middle_span(len(tokens))
    reference = tokenizer.decode(tokens[lo:hi], skip_special_tokens=True).strip()
    return _example([start_id] + tokens[:lo], tokens[lo:hi], tokens[hi:], reference)


def prefix_only(example: dict) -> dict:
    """The same blank with everything after it removed."""
    lo, hi = example["span"]
    return {**example, "ids": example["ids"][:hi], "given": example["given"][:hi], "suffix": []}


def fill(method: str, model, base, example: dict, given_grouping: str = "causal") -> list[int]:
    """The tokens a method puts in the example's blank (given tokens grouped as the model was trained)."""
    if method == "a3_prefix_only":
        return fill("a3_plan", model, base, prefix_only(example), given_grouping)
    order = "outside_in" if method == "a3_outside_in" else "left_to_right"
    plan = make_plan(example["ids"], given=example["given"], order=order, given_grouping=given_grouping)
    mode, options = {
        "a3_plan": ("plan", {"preview_open": False}),
        "a3_outside_in": ("plan", {"preview_open": False}),
        "a3_dynamic": ("dynamic", {"k": 1}),
        "diffusion": ("diffusion", {"k": 1}),
        "diffusion_k2": ("diffusion", {"k": 2}),
        "one_step_parallel": ("one_step_parallel", {"k": 1}),
        "ar_prefix": ("ar_baseline", {}),
    }[method]
    trace = collect(run_decoder(mode, model, plan, base=base, **options))
    lo, hi = example["span"]
    return trace.final_ids[lo:hi]


def ends_sentence(text: str) -> bool:
    """Whether a fill's text ends a sentence: . ! or ? last, maybe inside a closing quote or bracket."""
    return text.rstrip().rstrip("\"'”’)]").endswith((".", "!", "?"))


def bootstrap_ci(values, *, clusters=None, seed: int = 0, resamples: int = RESAMPLES) -> list[float] | None:
    """The 95% percentile bootstrap interval of the mean of `values` (None under two values or clusters).

    clusters: one label per value (e.g. the story of each blank); whole clusters are resampled, so several
    blanks of one story count as the correlated evidence they are. Without it every value is its own."""
    if clusters is not None and len(clusters) != len(values):
        raise ValueError(f"one cluster label per value: {len(clusters)} labels for {len(values)} values")
    labels = list(range(len(values))) if clusters is None else list(clusters)
    order = list(dict.fromkeys(labels))  # clusters in order of first appearance
    if len(order) < 2:
        return None
    index = {label: i for i, label in enumerate(order)}
    sums, counts = torch.zeros(len(order), dtype=torch.float64), torch.zeros(len(order), dtype=torch.float64)
    for value, label in zip(values, labels, strict=True):
        sums[index[label]] += value
        counts[index[label]] += 1
    picks = torch.randint(len(order), (resamples, len(order)), generator=torch.Generator().manual_seed(seed))
    means = sums[picks].sum(1) / counts[picks].sum(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return [round(lo, 3), round(hi, 3)]


def paired_difference(a, b, *, clusters=None, seed: int = 0) -> dict:
    """Mean of a[i] - b[i] over the same examples, with its 95% bootstrap interval (see bootstrap_ci)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same examples: {len(a)} vs {len(b)} values")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return {"mean": round(sum(diffs) / len(diffs), 3) if diffs else None,
            "ci95": bootstrap_ci(diffs, clusters=clusters, seed=seed), "n": len(diffs)}


def compare_runs(first: dict, second: dict, *, seed: int = 0) -> dict:
    """second minus first, per split ("stories", "general"), method and metric, on the same blanks: two
    `evaluate(..., per_example=True)` results. Raises ValueError where the blanks differ (another seed,
    split, --blanks-per-story or corpus) or where neither run kept its per-example scores."""
    def infill_of(run: dict) -> dict:
        return {"stories": run.get("infill", {}), "general": run.get("general", {}).get("infill", {})}

    a, b, out = infill_of(first), infill_of(second), {}
    for split in ("stories", "general"):
        for method in (m for m in a[split] if "per_example" in a[split][m] and "per_example" in b[split].get(m, {})):
            pa, pb = a[split][method]["per_example"], b[split][method]["per_example"]
            result = {}
            for metric in ("rougeL", "suffix_nll"):
                if pa.get(f"{metric}_id") != pb.get(f"{metric}_id") or len(pa[metric]) != len(pb[metric]):
                    raise ValueError(f"{split} {method} {metric}: the two runs scored different blanks "
                                     "(another seed, split, --blanks-per-story or corpus?); compare runs "
                                     "made with the same options")
                result[metric] = paired_difference(pb[metric], pa[metric], clusters=pa.get(f"{metric}_cluster"),
                                                   seed=seed)
            out[f"{split}.{method}"] = result
    if not out:
        raise ValueError("no method has per-example scores in both runs: make both with --per-example")
    return out


class InfillScores:
    """ROUGE and suffix coherence per method, accumulated over examples."""

    def __init__(self, methods, base, given_grouping: str = "causal"):
        from rouge_score import rouge_scorer

        self.methods, self.base, self.given_grouping = methods, base, given_grouping
        self.scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
        self.rouge = {m: {k: [] for k in ROUGE_KEYS} for m in methods}
        self.suffix = {m: [] for m in (*methods, "reference")}
        self.text = {m: [] for m in (*methods, "reference")}
        self.ends = {m: [] for m in (*methods, "reference")}
        self.clusters: dict[str, list] = {"rouge": [], "suffix": []}  # the source (story) of each value
        self.ids: dict[str, list] = {"rouge": [], "suffix": []}  # the blank of each value
        self.samples: list[dict] = []

    def add(self, model, tokenizer, example: dict, sample_id: str, keep_sample: bool, cluster=None) -> None:
        """cluster: what the example shares with others (its story); default: the example itself."""
        cluster = sample_id if cluster is None else cluster
        self.clusters["rouge"].append(cluster)
        self.ids["rouge"].append(sample_id)
        lo, hi = example["span"]
        fills = {"reference": example["ids"][lo:hi].tolist()}
        texts = {"reference": example["reference"]}
        for method in self.methods:
            fills[method] = fill(method, model, self.base, example, self.given_grouping)
            texts[method] = tokenizer.decode(fills[method], skip_special_tokens=True).strip()
            for key, value in self.scorer.score(example["reference"], texts[method]).items():
                self.rouge[method][key].append(value.fmeasure * 100)
        for name, text in texts.items():
            self.ends[name].append(100.0 * ends_sentence(text))
        if self.base is not None and example["suffix"]:
            self.clusters["suffix"].append(cluster)
            self.ids["suffix"].append(sample_id)
            for name, tokens in fills.items():
                after, together = continuation_nll(self.base, example["prefix"], tokens, example["suffix"])
                self.suffix[name].append(after)
                self.text[name].append(together)
        if keep_sample:
            self.samples.append({"id": sample_id, **texts})

    def __len__(self) -> int:
        """The examples added so far."""
        return len(self.ids["rouge"])

    def summary(self, *, per_example: bool = False) -> dict:
        def mean(xs):
            return round(sum(xs) / len(xs), 3) if xs else None

        out = {m: {**{k: mean(v) for k, v in self.rouge[m].items()}, "suffix_nll": mean(self.suffix[m]),
                   "text_nll": mean(self.text[m]), "ends_sentence": mean(self.ends[m]),
                   "rougeL_ci95": bootstrap_ci(self.rouge[m]["rougeL"], clusters=self.clusters["rouge"]),
                   "suffix_nll_ci95": bootstrap_ci(self.suffix[m], clusters=self.clusters["suffix"])}
               for m in self.methods}
        out["reference"] = {"suffix_nll": mean(self.suffix["reference"]), "text_nll": mean(self.text["reference"]),
                            "ends_sentence": mean(self.ends["reference"])}
        if per_example:
            for m in self.methods:
                out[m]["per_example"] = {"rougeL": [round(v, 3) for v in self.rouge[m]["rougeL"]],
                                         "suffix_nll": [round(v, 4) for v in self.suffix[m]],
                                         "rougeL_id": self.ids["rouge"], "suffix_nll_id": self.ids["suffix"],
                                         "rougeL_cluster": self.clusters["rouge"],
                                         "suffix_nll_cluster": self.clusters["suffix"]}
        return out

    def paired(self) -> dict:
        """Each A3 method minus each baseline on the same blanks: rougeL and suffix_nll differences."""
        rouge, suffix = self.clusters["rouge"], self.clusters["suffix"]
        return {f"{a}-{b}": {"rougeL": paired_difference(self.rouge[a]["rougeL"], self.rouge[b]["rougeL"],
                                                         clusters=rouge),
                             "suffix_nll": paired_difference(self.suffix[a], self.suffix[b], clusters=suffix)}
                for a in A3_METHODS if a in self.methods for b in BASELINES if b in self.methods}


# --------------------------------------------------------------------------------------------------
# the evaluation


def _progress(what: str) -> None:
    """One line per example on stderr (the JSON stays alone on stdout's last line)."""
    import sys

    print(f"[eval {time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def _base_or_none(loaded):
    """The base AR model, or (None, why) when the checkpoint names none."""
    try:
        return loaded.base(), None
    except Exception as error:  # BaseUnavailableError (model.loading); never a silent stand-in
        from model.loading import ModelLoadError

        if not isinstance(error, ModelLoadError):
            raise
        return None, str(error)


class Perplexities:
    def __init__(self, model, base, rng):
        self.model, self.base, self.rng = model, base, rng
        self.nll = {"base_ar": 0.0, "a3_ar": 0.0, "a3_random_s4": 0.0}
        self.n_tokens = 0

    def add(self, ids: list[int]) -> dict:
        """Score one sequence; returns its NLLs (to merge into another tally)."""
        n = len(ids)
        if n < 2:
            return {"nll": {}, "n_tokens": 0}
        nll = {"base_ar": -ar_log_likelihood(self.base, ids) if self.base is not None else 0.0,
               "a3_ar": -sequence_log_likelihood(self.model, ids, torch.arange(n))[0],
               "a3_random_s4": -sequence_log_likelihood(self.model, ids,
                                                        sample_training_groups(n, "perm4", self.rng))[0]}
        one = {"nll": nll, "n_tokens": n - 1}
        self.merge(one)
        return one

    def merge(self, scored: dict) -> None:
        for key, value in scored["nll"].items():
            self.nll[key] += value
        self.n_tokens += scored["n_tokens"]

    def summary(self) -> dict:
        def ppl(key):
            return round(math.exp(self.nll[key] / self.n_tokens), 3) if self.n_tokens else None

        return {"ppl_base_ar": ppl("base_ar") if self.base is not None else None,
                "ppl_a3_ar_order": ppl("a3_ar"), "ppl_a3_random_s4": ppl("a3_random_s4")}


def evaluate(loaded, *, limit: int | None = None, seed: int = 0, split: str = "test", methods=METHODS,
             data_dir=None, general_limit: int | None = 300, general_infill: int = 120,
             general_dir=None, per_example: bool = False, blanks_per_story: int = 1) -> dict:
    """Stories (`limit` of the split) and general text (`general_limit` documents for perplexity and
    `general_infill` sentences for infilling, balanced over the sources; 0 skips the general part).
    blanks_per_story > 1 masks that many different sentences of each story, one example each (the
    first is the default's blank); the intervals then resample whole stories."""
    if blanks_per_story < 1:
        raise ValueError(f"blanks_per_story must be at least 1; got {blanks_per_story}.")
    base, why_no_base = _base_or_none(loaded)
    if base is None:
        methods = tuple(m for m in methods if m not in BASE_METHODS)
        if not methods:
            raise ValueError(f"every method asked for needs the AR base, which this model lacks: {why_no_base}")
    model, tok, start = loaded.model, loaded.tokenizer, loaded.start_token_id
    rng = torch.Generator().manual_seed(seed)
    extra_rng = torch.Generator().manual_seed(seed + 2)  # the general split draws with seed + 1
    t0 = time.perf_counter()

    stories = read_stories(split, data_dir, limit=limit)
    grouping = loaded.given_grouping
    ppl, infill = Perplexities(model, base, rng), InfillScores(methods, base, grouping)
    for n, story in enumerate(stories):
        _progress(f"story {n + 1}/{len(stories)}")
        ids = ([start] + tok(story["text"], add_special_tokens=False).input_ids)[: loaded.max_length]
        ppl.add(ids)
        for j, example in enumerate(story_blanks(tok, start, story["text"], rng, blanks_per_story, extra_rng)):
            sample_id = story["id"] if j == 0 else f"{story['id']}#{example['sentence']}"
            infill.add(model, tok, example, sample_id, keep_sample=len(infill.samples) < 5, cluster=story["id"])
    result = {"model": loaded.name, "trained": loaded.trained, "split": split, **ppl.summary(),
              "infill": infill.summary(per_example=per_example), "infill_paired": infill.paired(),
              "n_examples": len(stories),
              "n_infill": len(infill), "n_tokens": ppl.n_tokens, "seed": seed,
              **({"blanks_per_story": blanks_per_story} if blanks_per_story > 1 else {})}
    samples = infill.samples
    if general_limit != 0:
        result["general"], general_samples = evaluate_general(loaded, model, base, methods, seed=seed,
                                                              limit=general_limit, n_infill=general_infill,
                                                              directory=general_dir, per_example=per_example)
        samples = samples + general_samples
    if why_no_base:
        result["base_unavailable"] = why_no_base
    result.update({"seconds": round(time.perf_counter() - t0, 1), "samples": samples})
    return result


def evaluate_general(loaded, model, base, methods, *, seed: int, limit: int | None, n_infill: int,
                     directory=None, per_example: bool = False) -> tuple[dict, list[dict]]:
    from model.general import SOURCES, interleave_sources, read_general, sentence_for_infill

    tok, start = loaded.tokenizer, loaded.start_token_id
    docs = interleave_sources(read_general("test", directory), limit)
    rng = torch.Generator().manual_seed(seed + 1)
    overall = Perplexities(model, base, rng)
    by_source = {s: Perplexities(model, base, rng) for s in SOURCES}  # tallies of overall's scores
    infill = InfillScores(methods, base, loaded.given_grouping)
    for doc in docs:
        ids = ([start] + tok(doc["text"], add_special_tokens=False).input_ids)[: loaded.max_length]
        by_source[doc["source"]].merge(overall.add(ids))
    for doc in docs:
        if len(infill) >= n_infill:
            break
        _progress(f"general infill {len(infill) + 1}/{n_infill}")
        sentence = sentence_for_infill(doc["text"])
        example = middle_infill_example(tok, start, sentence) if sentence else None
        if example is not None:
            infill.add(model, tok, example, doc["id"], keep_sample=len(infill.samples) < 5)
    result = {**overall.summary(), "infill": infill.summary(per_example=per_example),
              "infill_paired": infill.paired(), "n_documents": len(docs),
              "n_infill": len(infill), "n_tokens": overall.n_tokens,
              "by_source": {s: {**p.summary(), "n_tokens": p.n_tokens} for s, p in by_source.items()}}
    return result, infill.samples


def _compare_files(ap, path_a: str, path_b: str) -> dict:
    runs = []
    for path in (path_a, path_b):
        try:
            lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
            runs.append(json.loads(lines[-1]))
        except (OSError, IndexError, json.JSONDecodeError) as err:
            ap.error(f"--compare {path}: not a model.eval output (its last line must be the JSON object): {err}")
    try:
        return {"first": path_a, "second": path_b, "second_minus_first": compare_runs(*runs)}
    except ValueError as err:
        ap.error(f"--compare: {err}")


def main(argv: list[str] | None = None) -> None:
    from model.loading import ModelLoadError, load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="default | tiny | a checkpoint or adapter directory")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test stories (0: general text only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=["test", "validation"])
    ap.add_argument("--data-dir", default=None, help="a story corpus directory (default assets/stories)")
    ap.add_argument("--general-dir", default=None, help="a general corpus directory (default assets/general)")
    ap.add_argument("--general-limit", type=int, default=300,
                    help="general documents for perplexity, balanced over sources (0: skip general text)")
    ap.add_argument("--general-infill", type=int, default=120, help="general sentences for infilling")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated, from {', '.join(METHODS + EXTRA_METHODS)}")
    ap.add_argument("--per-example", action="store_true",
                    help="add each method's per-example rougeL and suffix_nll (to compare two models later)")
    ap.add_argument("--blanks-per-story", type=int, default=1,
                    help="mask this many different sentences of each story, one example each (narrower intervals)")
    ap.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), default=None,
                    help="print B minus A for two --per-example runs on the same blanks; evaluates nothing")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args(argv)
    if args.compare:
        print(json.dumps(_compare_files(ap, *args.compare)))
        return
    for flag, value, least in (("--blanks-per-story", args.blanks_per_story, 1), ("--limit", args.limit, 0),
                               ("--general-limit", args.general_limit, 0), ("--threads", args.threads, 1),
                               ("--general-infill", args.general_infill, 0)):
        if value is not None and value < least:
            ap.error(f"{flag} must be at least {least}; got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = set(methods) - set(METHODS + EXTRA_METHODS)
    if unknown or not methods:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS + EXTRA_METHODS)}")
    try:
        loaded = load_model(args.model)
    except ModelLoadError as err:
        ap.exit(3, f"--model {args.model}: {err}\n")
    result = evaluate(loaded, limit=args.limit, seed=args.seed, split=args.split, methods=methods,
                      data_dir=Path(args.data_dir) if args.data_dir else None,
                      general_limit=args.general_limit, general_infill=args.general_infill,
                      general_dir=Path(args.general_dir) if args.general_dir else None,
                      per_example=args.per_example, blanks_per_story=args.blanks_per_story)
    if not args.json:
        for sample in result["samples"]:
            print(json.dumps(sample, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
