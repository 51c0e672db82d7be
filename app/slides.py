"""Exports for slides: an animated GIF of the playback and a self-contained HTML player.

Both read only a trace dict (`DecodeTrace.to_dict(tokenizer)`), never the model, and draw its trace
view (`app.trace_view.view_of_dict`): the tokens, colours, grid shape, DAG and summaries the live stage
and the Plotly figures show, in the same palette (Viridis by step, given grey, the current step orange-red):

    export_gif(trace_dict, path)     one frame per step: the step's narration, the text with tinted
                                     tokens, the order grid and both attention masks, 1280x720, drawn
                                     with Pillow
    export_player(trace_dict, path)  one HTML file: narration, text, order grid, DAG and both masks with play,
                                     a scrub slider and the arrow keys; the view, stage_core.js (the
                                     stage's per-step rules) and app/static/player.* are inlined, so
                                     it works from file:// offline

tests/test_figures_stage.py checks the GIF's cells (`frame_cells`) and the player's A3Core against the
reference figures at every step; tests/test_slides.py opens the player offline in Chromium.

No MP4: Pillow does not write video, and the maintained encoders (PyAV, imageio-ffmpeg) each bring a
~30 MB FFmpeg build as a new dependency; the GIF plays in every slide tool.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from app.trace_view import OPEN_LABEL, TraceView, view_of_dict
from model.masks import two_stream_masks

STATIC = Path(__file__).resolve().parent / "static"

GIF_SIZE = (1280, 720)
GIF_SECONDS_PER_STEP = 0.7
GIF_HOLD_LAST_S = 2.5  # the finished text stays up a moment before the loop starts again
GIF_PANELS = ("masks",)  # what the frames' narration points at: a frame draws no DAG
INK = (31, 35, 40)
MUTED = (110, 116, 124)


# --------------------------------------------------------------------------------------------------
# the HTML player


def player_data(trace_dict: dict, start: int = -1) -> dict:
    """Everything the player draws, as plain JSON: the trace view (the player runs no model, loads nothing), and
    the step it opens on (`start`, 0-based; -1: before decoding)."""
    return {**view_of_dict(trace_dict).to_dict(), "start": int(start)}


def _script_json(value) -> str:
    """JSON safe inside <script>: no "</script>" or "<!--" can end it early."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def player_html(trace_dict: dict, start: int = -1) -> str:
    """The player page: player.html with its CSS, the stage's A3Core, player.js and the view inlined; it opens on
    step `start` (0-based; -1: before decoding)."""
    data = player_data(trace_dict, start)
    page = (STATIC / "player.html").read_text()
    script = (STATIC / "stage_core.js").read_text() + "\n" + (STATIC / "player.js").read_text()
    parts = {"{{TITLE}}": html.escape(f"A3 Explorer · {data['title']}"),
             "{{CSS}}": (STATIC / "player.css").read_text(),
             "{{JS}}": script.replace("</script", "<\\/script"),
             "{{DATA}}": _script_json(data)}
    for key, value in parts.items():  # one pass per key; values are never searched again
        head, sep, tail = page.partition(key)
        page = head + value + tail if sep else page
    return page


def export_player(trace_dict: dict, path: str | Path, start: int = -1) -> Path:
    """Write a self-contained HTML player of `trace_dict` (no network needed), opening on step `start`; return its
    path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(player_html(trace_dict, start), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# the GIF


@lru_cache(maxsize=64)
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


def _shrunk(draw: ImageDraw.ImageDraw, text: str, font, width: float, least: float = 0.7):
    """`font`, or a smaller size of it (down to `least` of its size) at which `text` fits `width`: a label
    a little too wide for its cell ("smiled", "‹EFBC›") shrinks before `_fit` cuts it."""
    size = getattr(font, "size", None)
    if size is None or draw.textlength(text, font=font) <= width:
        return font
    for smaller in range(size - 1, max(1, round(size * least)) - 1, -1):
        trial = _font(smaller)
        if draw.textlength(text, font=trial) <= width:
            return trial
    return _font(max(1, round(size * least)))


def wrap_words(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> list[str]:
    """`text` in lines no wider than `width` (a word longer than a line gets a line of its own)."""
    lines: list[str] = []
    for word in text.split(" "):
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(trial, font=font) <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines


def text_places(labels: list[str], sizes: list[float], box: tuple[float, float, float],
                line_h: float) -> list[tuple[int, float, float, float]]:
    """Where each piece of the text goes: (index, x, y, width), the pieces side by side with no gap, as
    the tokenizer joins them ("M" + "ia" reads "Mia"). `sizes` is the room each takes in every frame
    (its final label, or the open box if wider), so nothing moves from frame to frame. Lines break
    before a piece that starts with a space: a word is never split, unless it is longer than a line. A
    line break in the text is its mark "↵" and does not end the line here (the stage's text breaks there
    once it is known): a layout shared by every frame would show where a break is to come before the
    model decides it, and a text of many short lines would outgrow the frame."""
    x0, y, x1 = box
    words: list[list[int]] = []
    for i, label in enumerate(labels):
        if not words or label[:1] in " ·↵" or labels[i - 1][-1:] in " ·↵":
            words.append([])
        words[-1].append(i)
    places, x = [], x0
    for word in words:
        if x > x0 and x + sum(sizes[i] for i in word) > x1:
            x, y = x0, y + line_h
        for i in word:
            if x > x0 and x + sizes[i] > x1:
                x, y = x0, y + line_h
            places.append((i, x, y, sizes[i]))
            x += sizes[i]
    return places


@dataclass
class FrameCell:
    """What a GIF frame draws in one cell of the order grid."""

    p: int
    text: str  # the cell's label, before it is cut to the cell's width in pixels
    fill: tuple[int, int, int]
    ink: tuple[int, int, int]
    outline: bool  # the current step's orange-red outline
    in_run: bool = False  # one of the tokens of a split character (labelled once across its cells)


def frame_cells(view: TraceView, step: int) -> list[FrameCell]:
    """The order grid of frame `step`, cell by cell: the view's cells in RGB (tests compare them with the
    reference figure's)."""
    return [FrameCell(c.p, c.text, _rgb(c.color), _rgb(c.ink), c.current, c.run >= 0) for c in view.cells(step)]


class _Frames:
    """Draws frame `step` of a trace view: header, text with tinted tokens, order grid, both masks."""

    def __init__(self, view: TraceView, size: tuple[int, int]):
        self.view, self.size = view, size
        palette = view.palette
        self.colors = [_rgb(c) for c in palette.steps]
        self.given, self.open, self.attend, self.highlight = (
            _rgb(c) for c in (palette.given, palette.open, palette.attend, palette.highlight))
        width, height = size
        self.margin = round(width * 0.025)
        self.scale = height / 720
        self.title_font = _font(round(26 * self.scale), bold=True)
        self.small_font = _font(round(17 * self.scale))
        # the narration under the summary, in as many lines as the longest sentence needs (two at most)
        self.narration_font, self.narration_lines, self.narration_h = self._layout_narration()
        narration_bottom = round(84 * self.scale) + max(map(len, self.narration_lines), default=0) * self.narration_h
        # the text takes what it needs (at most half the frame); the lower band gets the rest:
        # the grid on the left, the two masks on the right
        self.text_box = (self.margin, narration_bottom + round(6 * self.scale), width - self.margin,
                         round(height * 0.5))
        self.text_font, self.text_layout = self._layout_text()
        places, line_h = self.text_layout
        text_bottom = max((y for _, _, y, _ in places), default=self.text_box[1]) + line_h
        self.band_top = max(round(text_bottom + 24 * self.scale), round(height * 0.3))

    # ---- narration: every step's sentence whole, in the largest font that puts each in two lines
    def _layout_narration(self):
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        width = self.size[0] - 2 * self.margin - round(12 * self.scale)
        sentences = [s.narration for s in self.view.steps]
        for size in range(round(17 * self.scale), round(11 * self.scale) - 1, -1):
            font = _font(size)
            lines = [wrap_words(probe, text, font, width) for text in sentences]
            if all(len(wrapped) <= 2 for wrapped in lines):
                break
        else:  # even the smallest type needs more: the second line ends in "…"
            lines = [wrapped[:1] + [_fit(probe, " ".join(wrapped[1:]), font, width)] if len(wrapped) > 2 else wrapped
                     for wrapped in lines]
        return font, lines, round(size * 1.3)

    def _narration(self, draw: ImageDraw.ImageDraw, step: int) -> None:
        lines = self.narration_lines[step]
        top, m = round(84 * self.scale), self.margin
        draw.rectangle((m, top + 2, m + max(2, round(3 * self.scale)), top + len(lines) * self.narration_h - 2),
                       fill=self.highlight)
        for i, line in enumerate(lines):
            draw.text((m + round(12 * self.scale), top + i * self.narration_h), line, font=self.narration_font,
                      fill=INK)

    # ---- text: the tokens joined as the tokenizer joins them, each tinted; the largest font that fits
    def _layout_text(self):
        x0, _, x1, y1 = self.text_box
        chips = self.view.sentence(-1)
        labels = [self.view.labels[chip.p] for chip in chips]
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        for size in range(round(34 * self.scale), 9, -2):
            font = _font(size)
            line_h = round(size * 1.55)
            open_width = probe.textlength(OPEN_LABEL, font=font) + size // 3  # only what is open at the start
            sizes = [max(probe.textlength(label, font=font), 0 if chip.state == "given" else open_width)
                     for label, chip in zip(labels, chips, strict=True)]
            places = text_places(labels, sizes, (x0, self.text_box[1], x1), line_h)
            if not places or places[-1][2] + line_h <= y1:
                return font, (places, line_h)
        return font, (places, line_h)

    def _text(self, draw: ImageDraw.ImageDraw, step: int) -> None:
        places, line_h = self.text_layout
        font, pad = self.text_font, max(2, line_h // 10)
        for (_, x, y, w), chip in zip(places, self.view.sentence(step), strict=True):
            top, bottom, middle = y + pad, y + line_h - pad, y + line_h / 2
            final = self.view.labels[chip.p]  # the room is its final label's: tint from after its leading space
            lead = draw.textlength(final[: len(final) - len(final.lstrip(" "))], font=font)
            if chip.state == "given":
                draw.text((x, middle), chip.label, font=font, fill=MUTED, anchor="lm")
            elif chip.state == "decided":
                self._tint(draw, (x + lead, top, x + w, bottom), [_rgb(c) for c in chip.colors])
                draw.text((x, middle), chip.label, font=font, fill=_rgb(chip.ink), anchor="lm")
            else:
                draw.rounded_rectangle((x + lead + 1, top, x + w - 1, bottom), radius=pad, fill=_rgb(chip.colors[0]),
                                       outline=(200, 200, 200))
                draw.text((x + (lead + w) / 2, middle), OPEN_LABEL, font=font, fill=_rgb(chip.ink), anchor="mm")
            if chip.current:
                draw.rectangle((x + lead - 1, top - 1, x + w + 1, bottom + 1), outline=self.highlight,
                               width=max(2, round(3 * self.scale)))

    @staticmethod
    def _tint(draw: ImageDraw.ImageDraw, box, colors: list[tuple[int, int, int]]) -> None:
        """The fill behind a token: its step colour, or one stripe per token of a split character."""
        x0, y0, x1, y1 = box
        step = (x1 - x0) / len(colors)
        for i, color in enumerate(colors):
            draw.rectangle((x0 + i * step, y0, x0 + (i + 1) * step, y1), fill=color)

    # ---- the order grid, as app.figures.grid_figure draws it
    def _grid(self, draw: ImageDraw.ImageDraw, step: int, box: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = box
        columns = self.view.columns
        rows = -(-self.view.length // columns)
        draw.text((x0, y0), "order grid · colour = decided at step", font=self.small_font, fill=INK)
        top = y0 + round(28 * self.scale)
        cell = min((x1 - x0) / columns, (y1 - top) / rows)
        gap = max(1, round(cell * 0.06))
        font = _font(max(8, min(round(cell * 0.26), round(16 * self.scale))))
        cells = frame_cells(self.view, step)
        for c in cells:
            cx, cy = x0 + (c.p % columns) * cell, top + (c.p // columns) * cell
            rect = (cx + gap, cy + gap, cx + cell - gap, cy + cell - gap)
            draw.rectangle(rect, fill=c.fill)
            if c.in_run:  # a dark foot under each token of a split character
                draw.rectangle((rect[0], rect[3] - max(2, round(cell * 0.05)), rect[2], rect[3]), fill=(90, 90, 90))
            if c.outline:
                draw.rectangle(rect, outline=self.highlight, width=max(2, round(cell * 0.08)))
            if cell >= 18:
                room = cell - 2 * gap - 4
                fitted = _shrunk(draw, c.text, font, room)
                draw.text(((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2), _fit(draw, c.text, fitted, room),
                          font=fitted, fill=c.ink, anchor="mm")
        big = _font(max(9, min(round(cell * 0.4), round(24 * self.scale))))
        for run in self.view.run_labels(step):  # a split character: one label across its cells
            left, right = x0 + run.c0 * cell, x0 + (run.c1 + 1) * cell
            text = _fit(draw, run.text, big, right - left - 4)
            draw.text(((left + right) / 2, top + (run.row + 0.5) * cell), text, font=big,
                      fill=cells[run.row * columns + run.c0].ink, anchor="mm")

    # ---- content and query masks of the step's grouping
    def _masks(self, image: Image.Image, draw: ImageDraw.ImageDraw, step: int, box) -> None:
        x0, y0, x1, y1 = box
        content, query = (m.numpy() for m in two_stream_masks(torch.tensor(self.view.groups_at(step))))
        gap = round(24 * self.scale)
        top = y0 + round(28 * self.scale)
        side = int(min((x1 - x0 - gap) / 2, y1 - top))
        n = self.view.length
        side -= side % n if side >= n else 0  # whole pixels per cell where there is room
        blocked = _rgb(self.view.palette.blocked)
        for k, (name, mask) in enumerate((("content  g[j] ≤ g[i]", content), ("query  g[j] < g[i]", query))):
            left = x0 + k * (side + gap)
            draw.text((left, y0), name, font=self.small_font, fill=INK)
            cells = np.where(mask[..., None], np.array(self.attend, np.uint8), np.array(blocked, np.uint8))
            tile = Image.fromarray(cells.astype(np.uint8), "RGB").resize((side, side), Image.Resampling.NEAREST)
            image.paste(tile, (left, top))
            if side / n >= 6:  # thin gaps between cells, as the page's heatmaps have
                for i in range(1, n):
                    at = left + round(i * side / n)
                    draw.line((at, top, at, top + side), fill=(230, 230, 230))
                    at = top + round(i * side / n)
                    draw.line((left, at, left + side, at), fill=(230, 230, 230))
            draw.rectangle((left - 1, top - 1, left + side, top + side), outline=(153, 153, 153))
            for p in self.view.current(step):  # the rows this step predicts
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
        draw.text((x, y + sw / 2), "step 1", font=self.small_font, fill=MUTED, anchor="lm")  # as the summary counts
        x += draw.textlength("step 1 ", font=self.small_font)
        bar = round(200 * self.scale)
        n = max(len(self.colors), 1)
        for i, color in enumerate(self.colors):
            draw.rectangle((x + i * bar / n, y, x + (i + 1) * bar / n, y + sw), fill=color)
        label = f" step {n}"
        draw.text((x + bar, y + sw / 2), label, font=self.small_font, fill=MUTED, anchor="lm")

    def draw(self, step: int) -> Image.Image:
        width, height = self.size
        image = Image.new("RGB", self.size, (255, 255, 255))
        draw = ImageDraw.Draw(image)
        m = self.margin
        draw.text((m, round(22 * self.scale)), _fit(draw, self.view.title, self.title_font, width - 2 * m),
                  font=self.title_font, fill=INK)
        summary = _fit(draw, self.view.caption(step).summary, self.small_font, width - 2 * m)
        draw.text((m, round(56 * self.scale)), summary, font=self.small_font, fill=MUTED)
        self._narration(draw, step)
        self._text(draw, step)
        draw.line((m, self.band_top - 6, width - m, self.band_top - 6), fill=(230, 230, 230), width=1)
        bottom = height - round(44 * self.scale)
        split = round(width * 0.47)
        self._grid(draw, step, (m, self.band_top, split - m, bottom))
        self._masks(image, draw, step, (split + m, self.band_top, width - m, bottom))
        self._legend(draw)
        return image


def gif_frames(trace_dict: dict, size: tuple[int, int] = GIF_SIZE) -> list[Image.Image]:
    """One RGB frame per step (step 0 is the first frame: the first group decided)."""
    view = view_of_dict(trace_dict, panels=GIF_PANELS)
    if not view.steps:
        raise ValueError("the trace has no steps: there is nothing to animate.")
    frames = _Frames(view, size)
    return [frames.draw(step) for step in range(len(view.steps))]


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
