"""An evaluation run as the Markdown tables the README and docs/evaluation.md show.

    python -m model.eval.report runs/eval/v7-b4.json            # the README's one table
    python -m model.eval.report runs/eval/v7-b4.json --full     # + the paired differences and the targets

Every number comes from the run's JSON (its last line); nothing is loaded or decoded. The one table puts
rougeL, suffix NLL, text NLL and repeats side by side for every method on both splits, so a gain on one
that costs another shows.
"""

from __future__ import annotations

import argparse

from model.eval.runs import infill_block, paired_block, read_run
from model.eval.targets import check
from model.repeats import RULE

NAMES = {"a3_rerank": "A3 best of N", "a3_plan": "A3 left to right", "a3_outside_in": "A3 outside-in",
         "a3_dynamic": "A3 dynamic", "diffusion": "diffusion", "diffusion_k2": "diffusion, 2 per step",
         "one_step_parallel": "one-step parallel", "ar_prefix": "AR from the prefix",
         "a3_prefix_only": "A3, prefix only", "reference": "the original text"}
ORDER = ("a3_rerank", "a3_plan", "a3_outside_in", "a3_dynamic", "diffusion", "diffusion_k2", "one_step_parallel",
         "ar_prefix", "a3_prefix_only", "reference")


def _cell(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(diff: dict | None) -> str:
    if not diff or diff.get("mean") is None:
        return "–"
    ci = diff.get("ci95")
    return f"{diff['mean']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def one_table(run: dict) -> str:
    """rougeL ↑, suffix NLL ↓, text NLL ↓, repeats (%) ↓ per method, stories | general text."""
    splits = (infill_block(run, "stories"), infill_block(run, "general"))
    lines = ["| method | rougeL ↑ | suffix NLL ↓ | text NLL ↓ | repeats % ↓ | rougeL ↑ | suffix NLL ↓ | text NLL ↓ "
             "| repeats % ↓ |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             "| | **stories** | | | | **general text** | | | |"]
    default = run.get("default_method")
    for method in (m for m in ORDER if any(m in s for s in splits)):
        name = NAMES.get(method, method) + (" (the page's default)" if method == default else "")
        cells = []
        for split in splits:
            row = split.get(method, {})
            cells += [_cell(row.get("rougeL"), 2), _cell(row.get("suffix_nll"), 3), _cell(row.get("text_nll"), 3),
                      _cell(row.get("repeats"), 1)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rule_note(run: dict) -> str:
    """What the decoders were held to: with the no-repeat rule on, the repeats column is partly kept down by
    construction (the rule bans much of what `repeats` counts), so it is said under the table, with the rule's
    version (a run made before runs recorded it was decoded under version 1)."""
    options = run.get("options") or {}
    n = options.get("no_repeat")
    if not n:
        return "Decoded without the no-repeat rule: the repeats are the model's own."
    if options.get("rule") == RULE:
        reach = "a 3-word phrase standing within 64 tokens"
    elif options.get("rule"):
        reach = f"a phrase under an earlier version of the rule (\"{options['rule']}\")"
    else:
        reach = "a phrase under the rule's version 1 (3 tokens within 24)"
    return (f"Every method decoded with the no-repeat rule (n = {n}, model.repeats), baselines included: the "
            f"decoders may not put a word next to itself or complete {reach}, so the repeats column is kept "
            "down partly by construction; the original text is never changed. Methods not listed were not run.")


def paired_table(run: dict) -> str:
    """Each A3 decoder minus each other method, mean and 95% story-clustered interval."""
    lines = ["| split | A3 decoder − other | rougeL | suffix NLL | text NLL |", "|---|---|---|---|---|"]
    for split in ("stories", "general"):
        for pair, diff in paired_block(run, split).items():
            a, b = pair.split("-", 1)
            lines.append(f"| {split} | {NAMES.get(a, a)} − {NAMES.get(b, b)} | {_interval(diff.get('rougeL'))} "
                         f"| {_interval(diff.get('suffix_nll'))} | {_interval(diff.get('text_nll'))} |")
    return "\n".join(lines)


def targets_table(run: dict) -> str:
    result = check(run)
    mark = {True: "yes", False: "**no**", None: "not measured"}
    lines = ["| decoder | stories | general text | all targets |", "|---|---|---|---|"]
    for method, verdict in result["decoders"].items():
        cells = []
        for split in ("stories", "general"):
            checks = verdict[split]
            cells.append("–" if checks is None else
                         ", ".join(f"{name} {mark[c['pass']]}" for name, c in checks.items() if name != "pass"))
        lines.append(f"| {NAMES.get(method, method)} | {cells[0]} | {cells[1]} | {mark[verdict['pass']]} |")
    model = result["model_targets"]

    def value(x) -> str:
        return "not measured" if x is None else f"{x}"

    s4, story, general = model["random_s4_within_5x"], model["story_ppl_vs_v7"], model["general_ppl_vs_base"]
    lines.append("")
    lines.append(f"Random groups of 4: {value(s4['multiple'])} times the left-to-right perplexity (target ≤ 5: "
                 f"{mark[s4['pass']]}); story perplexity left to right {value(story['ppl_a3_ar_order'])} (v7 10.49: "
                 f"{mark[story['pass']]}); general {value(general['ppl_a3_ar_order'])} against the base's "
                 f"{value(general['ppl_base_ar'])} ({mark[general['pass']]}). "
                 + ("The whole run (4 blanks per story, the general part): targets may be read from it."
                    if result["full_run"] else "**Not the whole run: no target is read from it.**"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m model.eval.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a `python -m model.eval --json` output")
    ap.add_argument("--full", action="store_true", help="add the paired differences and the targets")
    args = ap.parse_args(argv)
    try:
        run = read_run(args.run)
    except ValueError as err:
        ap.exit(2, f"{err}\n")
    parts = [one_table(run), rule_note(run)]
    if args.full:
        parts += [paired_table(run), targets_table(run)]
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()
