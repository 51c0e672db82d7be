"""? How A3 works: the explainer (app/static/how_a3_works.md), with KaTeX math."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

HOW_A3_WORKS = (Path(__file__).resolve().parent.parent / "static" / "how_a3_works.md").read_text()
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]


def build_how_tab() -> None:
    with gr.Tab("? How A3 works", id="how", elem_id="tab-how"):
        gr.Markdown(HOW_A3_WORKS, latex_delimiters=LATEX, elem_id="how")
