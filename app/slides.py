"""Exports for slides: an animated GIF of the playback and a self-contained HTML player.

Both read only a trace dict (`DecodeTrace.to_dict(tokenizer)`), never the model, and draw what
`app.figures` draws, in its palette (Viridis by step, given grey, the current step orange-red):

    export_gif(trace_dict, path)     one frame per step: the text with tinted tokens, the order grid
                                     and both attention masks, 1280x720, drawn with Pillow
    export_player(trace_dict, path)  one HTML file: text, order grid, DAG and both masks with play,
                                     a scrub slider and the arrow keys; the JS and CSS of
                                     app/static/player.* are inlined, so it works from file:// offline

The player computes the masks itself from the group ids (content g[j] <= g[i], query g[j] < g[i]);
tests/test_slides.py checks its cells against `model.masks.two_stream_masks`. The DAG edges come from
`app.figures.dependency_graph`, so the player and the page agree on them by construction.

No MP4: Pillow does not write video, and the maintained encoders (PyAV, imageio-ffmpeg) each bring a
~30 MB FFmpeg build as a new dependency; the GIF plays in every slide tool.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from app import figures
from model.decoding import DecodeTrace
from model.masks import two_stream_masks

STATIC = Path(__file__).resolve().parent / "static"
START_LABEL = "⟨s⟩"  # model.text.token_strings' name for the start token; the text strip hides it
OPEN_LABEL = "▢"

GIF_SIZE = (1280, 720)
GIF_SECONDS_PER_STEP = 0.7
GIF_HOLD_LAST_S = 2.5  # the finished text stays up a moment before the loop starts again
INK = (31, 35, 40)
MUTED = (110, 116, 124)


# --------------------------------------------------------------------------------------------------
# what both exports read from a trace dict


def display(token: str) -> str:
    """A token as the exports show it: line breaks and tabs made visible, one line always."""
    return token.replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


@dataclass
class _Trace:
    """The parts of a trace dict the exports draw, with token strings resolved."""

    title: str
    length: int
    given: list[bool]
    group_ids: list[int]
    decided: list[int]  # per position: the step that decided it, -1 for given
    labels: list[str | None]  # before decoding: the given tokens, None where open
    steps: list[dict]  # group, positions, tokens (strings), logprob, model_calls, elapsed_s, group_ids
    final_text: str

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def tokens_at(self, step: int) -> list[str | None]:
        """The sequence after `step` (-1: before any), as in `DecodeTrace.tokens_at`: None where open."""
        tokens = list(self.labels)
        for s in self.steps[: step + 1]:
            for p, t in zip(s["positions"], s["tokens"], strict=True):
                tokens[p] = t
        return tokens

    def group_ids_at(self, step: int) -> list[int]:
        if 0 <= step < self.n_steps and self.steps[step].get("group_ids") is not None:
            return self.steps[step]["group_ids"]
        return self.group_ids

    def hides_start(self) -> bool:
        return bool(self.length and self.given[0] and self.labels[0] == START_LABEL)


def _read(trace_dict: dict) -> _Trace:
    plan = trace_dict["plan"]
    ids, given = [int(t) for t in plan["token_ids"]], [bool(g) for g in plan["given"]]
    final_ids = [int(t) for t in trace_dict.get("final_ids") or ids]
    final_tokens = trace_dict.get("final_tokens")
    vocab: dict[int, str] = {}
    if final_tokens and len(final_tokens) == len(final_ids):
        vocab = {t: s for t, s in zip(final_ids, final_tokens, strict=True)}
    if final_tokens and given and given[0]:
        vocab[ids[0]] = final_tokens[0]  # the start token's name, though other positions may hold its id

    def name(token_id: int, position: int | None = None) -> str:
        if position is not None and final_tokens and final_ids[position] == token_id:
            return final_tokens[position]
        return vocab.get(token_id, f"#{token_id}")

    steps = [{"step": int(s["step"]), "group": s["group"], "positions": [int(p) for p in s["positions"]],
              "tokens": [name(int(t), int(p)) for p, t in zip(s["positions"], s["tokens"], strict=True)],
              "logprob": float(s["logprob"]), "model_calls": int(s.get("model_calls", 0)),
              "elapsed_s": float(s.get("elapsed_s", 0.0)), "group_ids": s.get("group_ids")}
             for s in trace_dict["steps"]]
    decided = [-1] * len(ids)
    for s in steps:
        for p in s["positions"]:
            decided[p] = s["step"]
    settings = trace_dict.get("settings") or {}
    method = trace_dict.get("method") or settings.get("method") or trace_dict.get("mode", "")
    plan_name = str(plan.get("name") or "")
    same = plan_name.lower().startswith(str(method).lower())  # "official dynamic (k=2)" says it already
    title = plan_name if same else " · ".join(str(x) for x in (method, plan_name) if x)
    labels = [name(t, p) if g else None for p, (t, g) in enumerate(zip(ids, given, strict=True))]
    return _Trace(title=title, length=len(ids), given=given, group_ids=[int(g) for g in plan["group_ids"]],
                  decided=decided, labels=labels, steps=steps, final_text=trace_dict.get("final_text", ""))


def _summary(trace: _Trace, step: int) -> str:
    """`app.figures.step_summary` without the timing (a slide shows the order, not the laptop's speed)."""
    if step < 0:
        n_given = sum(trace.given)
        return f"Before decoding: {n_given} given, {trace.length - n_given} open"
    s = trace.steps[step]
    positions = ", ".join(map(str, s["positions"][:12])) + (" …" if len(s["positions"]) > 12 else "")
    return (f"Step {step + 1}/{trace.n_steps} · group {s['group']} · committed positions {positions} · "
            f"log p = {s['logprob']:.2f} · model calls {s['model_calls']}")


def _palette(n_steps: int) -> dict:
    steps = figures.step_colors(n_steps)
    return {"steps": steps, "ink": ["#ffffff" if figures.is_dark(c) else "#111111" for c in steps],
            "given": figures.GIVEN_COLOR, "open": figures.OPEN_COLOR, "attend": figures.ATTEND_COLOR,
            "blocked": figures.BLOCKED_COLOR, "highlight": figures.HIGHLIGHT_COLOR}


# --------------------------------------------------------------------------------------------------
# the HTML player


def _dag(trace_dict: dict) -> dict:
    """Node names and edges (index pairs) of the page's DAG, all and transitively reduced."""
    graph = figures.dependency_graph(DecodeTrace.from_dict(trace_dict))
    names = list(graph.nodes)  # "given" first (when there is one), then s0, s1, ... in decoding order
    index = {n: i for i, n in enumerate(names)}

    def pairs(g) -> list[list[int]]:
        return sorted([index[u], index[v]] for u, v in g.edges())

    return {"nodes": names, "edges": pairs(graph), "reduced": pairs(figures.transitive_reduction(graph))}


def player_data(trace_dict: dict) -> dict:
    """Everything the player draws, as plain JSON (the player runs no model and loads nothing)."""
    trace = _read(trace_dict)
    return {"title": trace.title, "length": trace.length, "given": trace.given, "group_ids": trace.group_ids,
            "decided": trace.decided, "labels": trace.labels, "steps": trace.steps, "hide_start": trace.hides_start(),
            "final_text": trace.final_text, "dag": _dag(trace_dict), "palette": _palette(trace.n_steps)}


def _script_json(value) -> str:
    """JSON safe inside <script>: no "</script>" or "<!--" can end it early."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def player_html(trace_dict: dict) -> str:
    data = player_data(trace_dict)
    page = (STATIC / "player.html").read_text()
    parts = {"{{TITLE}}": html.escape(f"A3 Explorer · {data['title']}"),
             "{{CSS}}": (STATIC / "player.css").read_text(),
             "{{JS}}": (STATIC / "player.js").read_text().replace("</script", "<\\/script"),
             "{{DATA}}": _script_json(data)}
    for key, value in parts.items():  # one pass per key; values are never searched again
        head, sep, tail = page.partition(key)
        page = head + value + tail if sep else page
    return page


def export_player(trace_dict: dict, path: str | Path) -> Path:
    """Write a self-contained HTML player of `trace_dict` (no network needed); return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(player_html(trace_dict), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# the GIF


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in (("DejaVuSans-Bold.ttf", "Arial Bold.ttf") if bold else ("DejaVuSans.ttf", "Arial.ttf")):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _rgb(color: str) -> tuple[int, int, int]:
    if color.startswith("#"):
        return tuple(int(color[i: i + 2], 16) for i in (1, 3, 5))
    return tuple(round(float(c)) for c in color.removeprefix("rgb(").removesuffix(")").split(","))


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


class _Frames:
    """Draws frame `step` of a trace: header, text with tinted tokens, order grid, both masks."""

    def __init__(self, trace: _Trace, size: tuple[int, int]):
        self.trace, self.size = trace, size
        palette = _palette(trace.n_steps)
        self.colors = [_rgb(c) for c in palette["steps"]]
        self.inks = [_rgb(c) for c in palette["ink"]]
        self.given, self.open = _rgb(figures.GIVEN_COLOR), _rgb(figures.OPEN_COLOR)
        self.attend, self.blocked = _rgb(figures.ATTEND_COLOR), _rgb(figures.BLOCKED_COLOR)
        self.highlight = _rgb(figures.HIGHLIGHT_COLOR)
        width, height = size
        self.margin = round(width * 0.025)
        self.scale = height / 720
        self.title_font = _font(round(26 * self.scale), bold=True)
        self.small_font = _font(round(17 * self.scale))
        # the text takes what it needs (at most half the frame); the lower band gets the rest:
        # the grid on the left, the two masks on the right
        self.text_box = (self.margin, round(88 * self.scale), width - self.margin, round(height * 0.5))
        self.text_font, self.text_layout = self._layout_text()
        places, line_h, _ = self.text_layout
        text_bottom = max((y for _, _, y, _ in places), default=self.text_box[1]) + line_h
        self.band_top = max(round(text_bottom + 24 * self.scale), round(height * 0.3))

    # ---- text: chips that wrap, with the largest font that fits the box
    def _layout_text(self):
        x0, y0, x1, y1 = self.text_box
        shown = [p for p in range(self.trace.length) if not (p == 0 and self.trace.hides_start())]
        final = self.trace.tokens_at(self.trace.n_steps - 1)
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        for size in range(round(34 * self.scale), 9, -2):
            font = _font(size)
            line_h, pad = round(size * 1.55), max(2, size // 6)
            x, y, places = x0, y0, []
            for p in shown:
                # the widest the chip will ever be: its final token or the open box
                label = display(final[p] or OPEN_LABEL)
                w = max(probe.textlength(label, font=font), probe.textlength(OPEN_LABEL, font=font)) + 2 * pad
                if x + w > x1 and x > x0:
                    x, y = x0, y + line_h
                places.append((p, x, y, w))
                x += w + pad
            if y + line_h <= y1:
                return font, (places, line_h, pad)
        return font, (places, line_h, pad)

    def _text(self, draw: ImageDraw.ImageDraw, step: int) -> None:
        tokens, current = self.trace.tokens_at(step), self._current(step)
        places, line_h, pad = self.text_layout
        font, chip_h = self.text_font, line_h - 2 * pad
        for p, x, y, w in places:
            d = self.trace.decided[p]
            box = (x, y, x + w, y + chip_h)
            if self.trace.given[p]:
                draw.text((x + pad, y + chip_h / 2), display(tokens[p]), font=font, fill=MUTED, anchor="lm")
            elif 0 <= d <= step:
                draw.rounded_rectangle(box, radius=pad, fill=self.colors[d],
                                       outline=self.highlight if p in current else None,
                                       width=max(2, round(3 * self.scale)))
                draw.text((x + pad, y + chip_h / 2), display(tokens[p]), font=font, fill=self.inks[d], anchor="lm")
            else:
                draw.rounded_rectangle(box, radius=pad, fill=self.open, outline=(200, 200, 200))
                draw.text((x + w / 2, y + chip_h / 2), OPEN_LABEL, font=font, fill=(150, 150, 150), anchor="mm")

    def _current(self, step: int) -> set[int]:
        return set(self.trace.steps[step]["positions"]) if step >= 0 else set()

    # ---- the order grid, as app.figures.grid_figure draws it
    def _grid(self, draw: ImageDraw.ImageDraw, step: int, box: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = box
        n = self.trace.length
        columns = grid_columns(n)
        rows = -(-n // columns)
        draw.text((x0, y0), "order grid · colour = decided at step", font=self.small_font, fill=INK)
        top = y0 + round(28 * self.scale)
        cell = min((x1 - x0) / columns, (y1 - top) / rows)
        gap = max(1, round(cell * 0.06))
        font = _font(max(8, min(round(cell * 0.26), round(16 * self.scale))))
        tokens, current = self.trace.tokens_at(step), self._current(step)
        for p in range(n):
            cx, cy = x0 + (p % columns) * cell, top + (p // columns) * cell
            rect = (cx + gap, cy + gap, cx + cell - gap, cy + cell - gap)
            d = self.trace.decided[p]
            if self.trace.given[p]:
                fill, ink, label = self.given, (34, 34, 34), tokens[p]
            elif 0 <= d <= step:
                fill, ink, label = self.colors[d], self.inks[d], tokens[p]
            else:
                fill, ink, label = self.open, (154, 154, 154), "?"
            draw.rectangle(rect, fill=fill)
            if p in current:
                draw.rectangle(rect, outline=self.highlight, width=max(2, round(cell * 0.08)))
            if cell >= 18:
                text = _fit(draw, display(label).strip() or display(label), font, cell - 2 * gap - 4)
                draw.text(((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2), text, font=font, fill=ink, anchor="mm")

    # ---- content and query masks of the step's grouping
    def _masks(self, image: Image.Image, draw: ImageDraw.ImageDraw, step: int, box) -> None:
        x0, y0, x1, y1 = box
        content, query = (m.numpy() for m in two_stream_masks(torch.tensor(self.trace.group_ids_at(step))))
        gap = round(24 * self.scale)
        top = y0 + round(28 * self.scale)
        side = int(min((x1 - x0 - gap) / 2, y1 - top))
        n = self.trace.length
        side -= side % n if side >= n else 0  # whole pixels per cell where there is room
        current = sorted(self._current(step))
        for k, (name, mask) in enumerate((("content  g[j] ≤ g[i]", content), ("query  g[j] < g[i]", query))):
            left = x0 + k * (side + gap)
            draw.text((left, y0), name, font=self.small_font, fill=INK)
            cells = np.where(mask[..., None], np.array(self.attend, np.uint8), np.array(self.blocked, np.uint8))
            tile = Image.fromarray(cells.astype(np.uint8), "RGB").resize((side, side), Image.Resampling.NEAREST)
            image.paste(tile, (left, top))
            if side / n >= 6:  # thin gaps between cells, as the page's heatmaps have
                for i in range(1, n):
                    at = left + round(i * side / n)
                    draw.line((at, top, at, top + side), fill=(230, 230, 230))
                    at = top + round(i * side / n)
                    draw.line((left, at, left + side, at), fill=(230, 230, 230))
            draw.rectangle((left - 1, top - 1, left + side, top + side), outline=(153, 153, 153))
            for p in current:  # the rows this step predicts
                ry0, ry1 = top + p * side / n, top + (p + 1) * side / n
                draw.rectangle((left - 1, ry0, left + side, ry1), outline=self.highlight,
                               width=max(1, min(3, round(side / n / 4))))

    def _legend(self, draw: ImageDraw.ImageDraw) -> None:
        width, height = self.size
        y = height - round(30 * self.scale)
        x = self.margin
        sw = round(16 * self.scale)
        for color, name in ((self.given, "given"), (self.open, "open"), (self.attend, "may attend")):
            draw.rectangle((x, y, x + sw, y + sw), fill=color, outline=(180, 180, 180))
            draw.text((x + sw + 6, y + sw / 2), name, font=self.small_font, fill=MUTED, anchor="lm")
            x += sw + 14 + draw.textlength(name, font=self.small_font)
        draw.rectangle((x, y, x + sw, y + sw), outline=self.highlight, width=3)
        draw.text((x + sw + 6, y + sw / 2), "this step", font=self.small_font, fill=MUTED, anchor="lm")
        x += sw + 20 + draw.textlength("this step", font=self.small_font)
        draw.text((x, y + sw / 2), "step 0", font=self.small_font, fill=MUTED, anchor="lm")
        x += draw.textlength("step 0 ", font=self.small_font)
        bar = round(200 * self.scale)
        n = max(len(self.colors), 1)
        for i, color in enumerate(self.colors):
            draw.rectangle((x + i * bar / n, y, x + (i + 1) * bar / n, y + sw), fill=color)
        label = f" step {n - 1}"
        draw.text((x + bar, y + sw / 2), label, font=self.small_font, fill=MUTED, anchor="lm")

    def draw(self, step: int) -> Image.Image:
        width, height = self.size
        image = Image.new("RGB", self.size, (255, 255, 255))
        draw = ImageDraw.Draw(image)
        m = self.margin
        draw.text((m, round(22 * self.scale)), _fit(draw, f"A3 · {self.trace.title}", self.title_font, width - 2 * m),
                  font=self.title_font, fill=INK)
        summary = _fit(draw, _summary(self.trace, step), self.small_font, width - 2 * m)
        draw.text((m, round(56 * self.scale)), summary, font=self.small_font, fill=MUTED)
        self._text(draw, step)
        draw.line((m, self.band_top - 6, width - m, self.band_top - 6), fill=(230, 230, 230), width=1)
        bottom = height - round(44 * self.scale)
        split = round(width * 0.47)
        self._grid(draw, step, (m, self.band_top, split - m, bottom))
        self._masks(image, draw, step, (split + m, self.band_top, width - m, bottom))
        self._legend(draw)
        return image


def grid_columns(length: int) -> int:
    """Columns of the order grid: a readable block, never a thin strip (at most the page's 16)."""
    return max(1, min(16, length, math.ceil(math.sqrt(length * 2))))


def gif_frames(trace_dict: dict, size: tuple[int, int] = GIF_SIZE) -> list[Image.Image]:
    """One RGB frame per step (step 0 is the first frame: the first group decided)."""
    trace = _read(trace_dict)
    if not trace.steps:
        raise ValueError("the trace has no steps: there is nothing to animate.")
    frames = _Frames(trace, size)
    return [frames.draw(step) for step in range(trace.n_steps)]


def export_gif(trace_dict: dict, path: str | Path, *, seconds_per_step: float = GIF_SECONDS_PER_STEP,
               size: tuple[int, int] = GIF_SIZE) -> Path:
    """Write an animated GIF of the playback of `trace_dict`, one frame per step; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = gif_frames(trace_dict, size)
    # one palette for all frames (taken from the last, which holds every step's colour), no dithering:
    # the tints stay the same from frame to frame
    reference = frames[-1].quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    indexed = [f.quantize(palette=reference, dither=Image.Dither.NONE) for f in frames]
    durations = [round(seconds_per_step * 1000)] * len(indexed)
    durations[-1] = max(durations[-1], round(GIF_HOLD_LAST_S * 1000))
    indexed[0].save(path, format="GIF", save_all=True, append_images=indexed[1:], duration=durations, loop=0,
                    optimize=False, disposal=1)
    return path
