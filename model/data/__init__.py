"""The corpora the trainer and the evaluation read: the distilled story corpus (`stories`, written by
`distill`) and the human-written general corpus (`general`). Text helpers only; no model code."""
