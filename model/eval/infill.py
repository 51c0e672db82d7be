"""Infilling and perplexity over a split: every method fills the same blanks, scored side by side.

The command line and the full description of every measure: model.eval.cli (`python -m model.eval`).
"""

from __future__ import annotations

import json
import math
import time

import torch

from model.config import DecodeConfig
from model.data.stories import read_stories
from model.decoding import collect, decode, sequence_log_likelihood
from model.eval.blanks import middle_infill_example, prefix_only, story_blanks
from model.eval.fill_cache import FillCache
from model.eval.metrics import (
    ar_log_likelihood,
    bootstrap_ci,
    continuation_nll,
    ends_sentence,
    has_repeat,
    paired_difference,
)
from model.eval.runs import SPLITS, infill_block
from model.plans import make_plan, sample_training_groups
from model.repeats import RULE
from model.rerank import BEST_OF_N_LABEL, best_of_n, candidates_with

EVAL_METHODS = ("a3_plan", "a3_outside_in", "a3_dynamic", "a3_rerank", "diffusion", "one_step_parallel",
                "ar_prefix", "a3_prefix_only")
EXTRA_METHODS = ("diffusion_k2",)  # on request (--methods): diffusion revealing two tokens per step
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
A3_METHODS = ("a3_plan", "a3_outside_in", "a3_dynamic", "a3_rerank")  # paired with every baseline and a3_plan
BASELINES = ("diffusion", "diffusion_k2", "one_step_parallel", "ar_prefix", "a3_prefix_only")
RESAMPLES = 2000
PAIRED_METRICS = ("rougeL", "suffix_nll", "text_nll")
GENERAL_LIMIT, GENERAL_INFILL = 300, 120  # the whole run's general documents (perplexity) and sentences (infill)
# The page's default decoder (app.ui.text_tab.EXAMPLES[0], the first-visit trace, /infill's default), by
# evaluation id: best of N, the best on the whole run v7-b4 (docs/evaluation.md: fewest repeats and best text
# NLL of the A3 decoders on both splits, suffix NLL within 0.09 nats of the best), though it meets not every
# target of the page's default.
DEFAULT_METHOD = "a3_rerank"


# each evaluated method as a decode config; the blank is always decoded greedily, given tokens grouped as
# the model was trained, candidates only for the rows decided (the evaluation reads only the tokens)
CONFIGS = {
    "a3_plan": DecodeConfig("plan", order="left_to_right", preview_open=False),
    "a3_outside_in": DecodeConfig("plan", order="outside_in", preview_open=False),
    "a3_dynamic": DecodeConfig("dynamic", k=1),
    "diffusion": DecodeConfig("diffusion", k=1),
    "diffusion_k2": DecodeConfig("diffusion", k=2),
    "one_step_parallel": DecodeConfig("one_step_parallel", k=1),
    "ar_prefix": DecodeConfig("ar_baseline"),
}
PAGE_LABELS = {**{m: c.label for m, c in CONFIGS.items()}, "a3_rerank": BEST_OF_N_LABEL}  # eval id -> page name
BASE_METHODS = tuple(m for m, config in CONFIGS.items() if config.spec.needs_base)  # need the base AR model


def method_config(method: str, no_repeat: int = 0) -> DecodeConfig:
    """A method's decode config, with the no-repeat rule `no_repeat` (model.repeats; 0: off)."""
    config = CONFIGS[method]
    return config.with_no_repeat(no_repeat) if no_repeat else config


def fill(method: str, model, base, example: dict, given_grouping: str = "causal", no_repeat: int = 0) -> list[int]:
    """The tokens a method puts in the example's blank (given tokens grouped as the model was trained)."""
    if method == "a3_prefix_only":
        return fill("a3_plan", model, base, prefix_only(example), given_grouping, no_repeat)
    lo, hi = example["span"]
    if method == "a3_rerank":  # best of N by the A3 model's own likelihood; the base (the judge) is not asked
        return best_of_n(model, example["ids"], example["given"], given_grouping=given_grouping,
                         candidates=candidates_with(no_repeat)).best.trace.final_ids[lo:hi]
    config = method_config(method, no_repeat)
    order = config.order if config.order != "custom" else "left_to_right"
    plan = make_plan(example["ids"], given=example["given"], order=order, given_grouping=given_grouping)
    trace = collect(decode(model, plan, config, base=base))
    return trace.final_ids[lo:hi]




def method_identity(method: str, no_repeat: int = 0) -> str:
    """What a method's fills depend on besides the model and the blank: its decode config (for the rerank,
    every candidate's) and, with the no-repeat rule on, the rule's version (model.repeats.RULE), so a fill
    kept by `FillCache` is reused only by the same method."""
    if no_repeat:
        return json.dumps([_identity(method, no_repeat), RULE])
    return _identity(method, 0)


def _identity(method: str, no_repeat: int) -> str:
    if method == "a3_rerank":
        return json.dumps([method, [[name, c.to_dict()] for name, c in candidates_with(no_repeat)]], sort_keys=True)
    if method == "a3_prefix_only":
        return json.dumps([method, method_config("a3_plan", no_repeat).to_dict()], sort_keys=True)
    return json.dumps([method, method_config(method, no_repeat).to_dict()], sort_keys=True)


def compare_runs(first: dict, second: dict, *, seed: int = 0) -> dict:
    """second minus first, per split ("stories", "general"), method and metric, on the same blanks: two
    `evaluate(..., per_example=True)` results. Raises ValueError where the blanks differ (another seed,
    split, --blanks-per-story or corpus) or where neither run kept its per-example scores."""
    a, b = ({split: infill_block(run, split) for split in SPLITS} for run in (first, second))
    out = {}
    for split in SPLITS:
        for method in (m for m in a[split] if "per_example" in a[split][m] and "per_example" in b[split].get(m, {})):
            pa, pb = a[split][method]["per_example"], b[split][method]["per_example"]
            result = {}
            for metric in (m for m in PAIRED_METRICS if m in pa and m in pb):
                if pa.get(f"{metric}_id") != pb.get(f"{metric}_id") or len(pa[metric]) != len(pb[metric]):
                    raise ValueError(f"{split} {method} {metric}: the two runs scored different blanks "
                                     "(another seed, split, --blanks-per-story or corpus?); compare runs "
                                     "made with the same options")
                result[metric] = paired_difference(pb[metric], pa[metric], clusters=pa.get(f"{metric}_cluster"),
                                                   seed=seed)
            out[f"{split}.{method}"] = result
        pa, pb = (run.get("perplexity_per_example") if split == "stories" else
                  run.get("general", {}).get("perplexity_per_example") for run in (first, second))
        if pa and pb:
            if pa["n_tokens"] != pb["n_tokens"]:
                raise ValueError(f"{split} perplexity: the two runs scored different documents (another split, "
                                 "--limit or corpus?); compare runs made with the same options")
            out[f"{split}.perplexity"] = {key: paired_difference(pb[key], pa[key], seed=seed)
                                          for key in pa if key.endswith("_nll") and key in pb}
    if not out:
        raise ValueError("no method has per-example scores in both runs: make both with --per-example")
    return out


class InfillScores:
    """ROUGE and suffix coherence per method, accumulated over examples."""

    def __init__(self, methods, base, given_grouping: str = "causal", cache: FillCache | None = None,
                 no_repeat: int = 0):
        from rouge_score import rouge_scorer

        self.methods, self.base, self.given_grouping, self.cache = methods, base, given_grouping, cache
        self.no_repeat = no_repeat  # every method decodes with this no-repeat rule (model.repeats; 0: off)
        self.scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
        self.rouge = {m: {k: [] for k in ROUGE_KEYS} for m in methods}
        self.suffix = {m: [] for m in (*methods, "reference")}
        self.text = {m: [] for m in (*methods, "reference")}
        self.ends = {m: [] for m in (*methods, "reference")}
        self.repeats = {m: [] for m in (*methods, "reference")}
        self.fills: dict[str, list[str]] = {m: [] for m in methods}
        self.clusters: dict[str, list] = {"rouge": [], "suffix": []}  # the source (story) of each value
        self.ids: dict[str, list] = {"rouge": [], "suffix": []}  # the blank of each value
        self.samples: list[dict] = []

    def add(self, model, tokenizer, example: dict, sample_id: str, keep_sample: bool, cluster=None) -> None:
        """cluster: what the example shares with others (its story); default: the example itself."""
        cluster = sample_id if cluster is None else cluster
        self.clusters["rouge"].append(cluster)
        self.ids["rouge"].append(sample_id)
        lo, hi = example["span"]
        fills = {"reference": example["ids"][lo:hi].tolist(), **self.fills_of(model, example)}
        texts = {"reference": example["reference"]}
        for method in self.methods:
            texts[method] = tokenizer.decode(fills[method], skip_special_tokens=True).strip()
            for key, value in self.scorer.score(example["reference"], texts[method]).items():
                self.rouge[method][key].append(value.fmeasure * 100)
        before = tokenizer.decode(example["prefix"], skip_special_tokens=True)
        after = tokenizer.decode(example["suffix"], skip_special_tokens=True)
        for name, text in texts.items():
            self.ends[name].append(100.0 * ends_sentence(text))
            self.repeats[name].append(100.0 * has_repeat(before, text, after))
        for method in self.methods:
            self.fills[method].append(texts[method])
        if self.base is not None and example["suffix"]:
            self.clusters["suffix"].append(cluster)
            self.ids["suffix"].append(sample_id)
            for name, tokens in fills.items():
                after, together = continuation_nll(self.base, example["prefix"], tokens, example["suffix"])
                self.suffix[name].append(after)
                self.text[name].append(together)
        if keep_sample:
            self.samples.append({"id": sample_id, **texts})

    def fills_of(self, model, example: dict) -> dict[str, list[int]]:
        """Every method's fill of the example: read from the cache, else decoded (and kept there)."""
        fills = {}
        for method in self.methods:
            identity = method_identity(method, self.no_repeat)
            fills[method] = self.cache.get(example, identity, self.given_grouping) if self.cache else None
            if fills[method] is None:
                fills[method] = fill(method, model, self.base, example, self.given_grouping, self.no_repeat)
                if self.cache is not None:
                    self.cache.put(example, identity, self.given_grouping, fills[method])
        return fills

    def __len__(self) -> int:
        """The examples added so far."""
        return len(self.ids["rouge"])

    def summary(self, *, per_example: bool = False) -> dict:
        def mean(xs):
            return round(sum(xs) / len(xs), 3) if xs else None

        out = {m: {**{k: mean(v) for k, v in self.rouge[m].items()}, "suffix_nll": mean(self.suffix[m]),
                   "text_nll": mean(self.text[m]), "ends_sentence": mean(self.ends[m]),
                   "repeats": mean(self.repeats[m]),
                   "rougeL_ci95": bootstrap_ci(self.rouge[m]["rougeL"], clusters=self.clusters["rouge"]),
                   "suffix_nll_ci95": bootstrap_ci(self.suffix[m], clusters=self.clusters["suffix"])}
               for m in self.methods}
        out["reference"] = {"suffix_nll": mean(self.suffix["reference"]), "text_nll": mean(self.text["reference"]),
                            "ends_sentence": mean(self.ends["reference"]), "repeats": mean(self.repeats["reference"])}
        if per_example:
            for m in self.methods:
                out[m]["per_example"] = {"rougeL": [round(v, 3) for v in self.rouge[m]["rougeL"]],
                                         "suffix_nll": [round(v, 4) for v in self.suffix[m]],
                                         "text_nll": [round(v, 4) for v in self.text[m]],
                                         "repeats": self.repeats[m], "fill": self.fills[m],
                                         "rougeL_id": self.ids["rouge"], "suffix_nll_id": self.ids["suffix"],
                                         "text_nll_id": self.ids["suffix"],
                                         "rougeL_cluster": self.clusters["rouge"],
                                         "suffix_nll_cluster": self.clusters["suffix"],
                                         "text_nll_cluster": self.clusters["suffix"]}
        return out

    def paired(self) -> dict:
        """Each A3 method minus each baseline and minus a3_plan (best of N: minus every other A3 decoder), on
        the same blanks: rougeL (higher is better), suffix_nll and text_nll (lower is better), with
        story-clustered intervals."""
        def values(method: str, metric: str) -> list[float]:
            return self.rouge[method]["rougeL"] if metric == "rougeL" else \
                (self.suffix if metric == "suffix_nll" else self.text)[method]

        clusters = {"rougeL": self.clusters["rouge"], "suffix_nll": self.clusters["suffix"],
                    "text_nll": self.clusters["suffix"]}
        def others(a: str) -> tuple[str, ...]:  # best of N also against each single decoder it could replace
            return (*BASELINES, *(A3_METHODS if a == "a3_rerank" else ("a3_plan",)))

        return {f"{a}-{b}": {metric: paired_difference(values(a, metric), values(b, metric), clusters=clusters[metric])
                             for metric in PAIRED_METRICS}
                for a in A3_METHODS if a in self.methods for b in others(a) if b in self.methods and b != a}


# --------------------------------------------------------------------------------------------------
# the evaluation


def _progress(what: str) -> None:
    """One line per example on stderr (the JSON stays alone on stdout's last line)."""
    import sys

    print(f"[eval {time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def base_or_none(loaded):
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
        self.per_document: list[dict] = []  # each scored sequence's NLLs and token count (for paired comparisons)

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

    def skip(self, ids: list[int]) -> None:
        """Draw what `add` would draw, score nothing: a shard keeps the seeded stream of the whole run."""
        if len(ids) >= 2:
            sample_training_groups(len(ids), "perm4", self.rng)

    def merge(self, scored: dict) -> None:
        for key, value in scored["nll"].items():
            self.nll[key] += value
        self.n_tokens += scored["n_tokens"]
        if scored["n_tokens"]:
            self.per_document.append(scored)

    def per_example(self) -> dict:
        """Each sequence's mean NLL per token under every scoring ("<key>_nll"), and its token count: what
        `compare_runs` pairs between two models on the same documents."""
        out = {f"{key}_nll": [round(d["nll"][key] / d["n_tokens"], 5) for d in self.per_document]
               for key in self.nll if key != "base_ar" or self.base is not None}
        return {**out, "n_tokens": [d["n_tokens"] for d in self.per_document]}

    def summary(self, per_example: bool = False) -> dict:
        def ppl(key):
            return round(math.exp(self.nll[key] / self.n_tokens), 3) if self.n_tokens else None

        return {"ppl_base_ar": ppl("base_ar") if self.base is not None else None,
                "ppl_a3_ar_order": ppl("a3_ar"), "ppl_a3_random_s4": ppl("a3_random_s4"),
                **({"perplexity_per_example": self.per_example()} if per_example else {})}


def story_examples(loaded, stories, rng, extra_rng, blanks_per_story: int, score):
    """(story index, story, sample id, example) for every blank of every story, in the whole run's order.
    `score(ids)` sees each story's tokens before its blanks are drawn: the perplexities (Perplexities.add,
    or .skip for a shard) draw from the same generator as the first blank, so this order is the run's."""
    tok, start = loaded.tokenizer, loaded.start_token_id
    for n, story in enumerate(stories):
        _progress(f"story {n + 1}/{len(stories)}")
        score(([start] + tok(story["text"], add_special_tokens=False).input_ids)[: loaded.max_length])
        for j, example in enumerate(story_blanks(tok, start, story["text"], rng, blanks_per_story, extra_rng)):
            yield n, story, (story["id"] if j == 0 else f"{story['id']}#{example['sentence']}"), example


def general_examples(tok, start: int, docs, n_infill: int):
    """(index, document, example) for the first `n_infill` documents with a sentence to mask in the middle."""
    from model.data.general import sentence_for_infill

    found = 0
    for doc in docs:
        if found >= n_infill:
            return
        sentence = sentence_for_infill(doc["text"])
        example = middle_infill_example(tok, start, sentence) if sentence else None
        if example is not None:
            yield found, doc, example
            found += 1


def evaluate(loaded, *, limit: int | None = None, seed: int = 0, split: str = "test", methods=EVAL_METHODS,
             data_dir=None, general_limit: int | None = GENERAL_LIMIT, general_infill: int = GENERAL_INFILL,
             general_dir=None, per_example: bool = False, blanks_per_story: int = 1,
             fills_cache: FillCache | None = None, shard: tuple[int, int] | None = None,
             no_repeat: int = 0) -> dict:
    """Stories (`limit` of the split) and general text (`general_limit` documents for perplexity and
    `general_infill` sentences for infilling, balanced over the sources; 0 skips the general part).
    blanks_per_story > 1 masks that many different sentences of each story, one example each (the
    first is the default's blank); the intervals then resample whole stories. `fills_cache` reads the
    fills already decoded by an interrupted run of the same model and keeps every new one.

    shard=(k, n): only decode, into `fills_cache`, the fills of every n-th story (the k-th of each n, from 0)
    and every n-th general sentence, drawing the same blanks as the whole run; nothing is scored. n such
    runs side by side, then one whole run reading the cache, give the whole run's result."""
    if blanks_per_story < 1:
        raise ValueError(f"blanks_per_story must be at least 1; got {blanks_per_story}.")
    if shard is not None:
        k, n = shard
        if fills_cache is None or not 0 <= k < n:
            raise ValueError(f"a shard needs a fills cache and 0 <= k < n; got shard {k}/{n}"
                             f"{'' if fills_cache is not None else ' without a fills cache'}.")
    base, why_no_base = base_or_none(loaded)
    if base is None:
        methods = tuple(m for m in methods if m not in BASE_METHODS)
        if not methods:
            raise ValueError(f"every method asked for needs the AR base, which this model lacks: {why_no_base}")
    model, tok = loaded.model, loaded.tokenizer
    rng = torch.Generator().manual_seed(seed)
    extra_rng = torch.Generator().manual_seed(seed + 2)  # the general split draws with seed + 1
    t0 = time.perf_counter()

    stories = read_stories(split, data_dir, limit=limit)
    grouping = loaded.given_grouping
    ppl, infill = Perplexities(model, base, rng), InfillScores(methods, base, grouping, fills_cache, no_repeat)
    score = ppl.add if shard is None else ppl.skip  # a shard draws what the whole run draws, scores nothing
    for n, story, sample_id, example in story_examples(loaded, stories, rng, extra_rng, blanks_per_story, score):
        if shard is None:
            infill.add(model, tok, example, sample_id, keep_sample=len(infill.samples) < 5, cluster=story["id"])
        elif n % shard[1] == shard[0]:
            infill.fills_of(model, example)
    if shard is not None:
        if general_limit != 0:
            evaluate_general(loaded, model, base, methods, seed=seed, limit=general_limit, n_infill=general_infill,
                             split=split, directory=general_dir, fills_cache=fills_cache, shard=shard,
                             no_repeat=no_repeat)
        return {"model": loaded.name, "shard": list(shard), "fills_kept": len(fills_cache),
                "fills_read_from_cache": fills_cache.hits, "seconds": round(time.perf_counter() - t0, 1)}
    result = {"model": loaded.name, "trained": loaded.trained, "split": split, "default_method": DEFAULT_METHOD,
              **ppl.summary(per_example),
              "infill": infill.summary(per_example=per_example), "infill_paired": infill.paired(),
              "n_examples": len(stories),
              "n_infill": len(infill), "n_tokens": ppl.n_tokens, "seed": seed,
              **({"blanks_per_story": blanks_per_story} if blanks_per_story > 1 else {}),
              "options": {"limit": limit, "general_limit": general_limit, "general_infill": general_infill,
                          "blanks_per_story": blanks_per_story, "methods": list(methods),
                          **({"no_repeat": no_repeat, "rule": RULE} if no_repeat else {})}}
    samples = infill.samples
    if general_limit != 0:
        result["general"], general_samples = evaluate_general(loaded, model, base, methods, seed=seed,
                                                              limit=general_limit, n_infill=general_infill,
                                                              split=split, directory=general_dir,
                                                              per_example=per_example, fills_cache=fills_cache,
                                                              no_repeat=no_repeat)
        samples = samples + general_samples
    if why_no_base:
        result["base_unavailable"] = why_no_base
    if fills_cache is not None:
        result["fills_read_from_cache"] = fills_cache.hits
    result.update({"seconds": round(time.perf_counter() - t0, 1), "samples": samples})
    return result


def evaluate_general(loaded, model, base, methods, *, seed: int, limit: int | None, n_infill: int,
                     split: str = "test", directory=None, per_example: bool = False,
                     fills_cache: FillCache | None = None, shard: tuple[int, int] | None = None,
                     no_repeat: int = 0) -> tuple[dict, list[dict]] | None:
    from model.data.general import SOURCES, interleave_sources, read_general

    tok, start = loaded.tokenizer, loaded.start_token_id
    docs = interleave_sources(read_general(split, directory), limit)
    rng = torch.Generator().manual_seed(seed + 1)
    overall = Perplexities(model, base, rng)
    by_source = {s: Perplexities(model, base, rng) for s in SOURCES}  # tallies of overall's scores
    infill = InfillScores(methods, base, loaded.given_grouping, fills_cache, no_repeat)
    if shard is not None:  # decode this shard's sentences into the cache; the perplexities draw nothing here
        for found, _doc, example in general_examples(tok, start, docs, n_infill):
            if found % shard[1] == shard[0]:
                _progress(f"general infill {found + 1}/{n_infill} (shard {shard[0]}/{shard[1]})")
                infill.fills_of(model, example)
        return None
    for doc in docs:
        ids = ([start] + tok(doc["text"], add_special_tokens=False).input_ids)[: loaded.max_length]
        by_source[doc["source"]].merge(overall.add(ids))
    for found, doc, example in general_examples(tok, start, docs, n_infill):
        _progress(f"general infill {found + 1}/{n_infill}")
        infill.add(model, tok, example, doc["id"], keep_sample=len(infill.samples) < 5)
    result = {**overall.summary(per_example), "infill": infill.summary(per_example=per_example),
              "infill_paired": infill.paired(), "n_documents": len(docs),
              "n_infill": len(infill), "n_tokens": overall.n_tokens,
              "by_source": {s: {**p.summary(), "n_tokens": p.n_tokens} for s, p in by_source.items()}}
    return result, infill.samples

