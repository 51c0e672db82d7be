"""Measuring a model: the evaluation (`python -m model.eval --json`), the right-context probe
(`python -m model.eval.right_context`) and the library's self-check (`python -m model.selfcheck`).

    cli            the evaluation's command line and what every measure means
    infill         every method fills the same blanks (`fill`, `evaluate`, `evaluate_general`)
    blanks         the blanks: prefix, masked middle and suffix as token ids
    metrics        likelihoods under the base model (the judge), bootstrap intervals
    right_context  what the text after a blank buys, teacher-forced
    targets        which decoder may be the page's default: the targets read off a run
    runs           a run's JSON read back, its blocks per split
    report         the run as the Markdown tables of the README and docs/evaluation.md
    selfcheck      the library's core properties on any model, device and dtype
"""

from model.eval.infill import EVAL_METHODS, evaluate, fill

__all__ = ["EVAL_METHODS", "evaluate", "fill"]
