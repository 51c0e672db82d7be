"""The order lab and the mask gallery, without the UI: inputs -> exact log-likelihoods -> figures.

The lab scores one complete text under many orders at once (`model.orders.order_likelihoods`), draws
the distribution with the best and worst order marked, compares two orders token by token, and turns
any order (or gallery scheme) into a teacher-forced trace the stage can step through. The figure
builders are pure: plain values in, Plotly figures out. Nothing here imports gradio.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from app import figures, memory
from app.session import (
    MAX_ORDERS,
    MAX_ORDERS_JSON_CHARS,
    ORDER_WORDS,
    Explorer,
    InputError,
    Result,
    check_group_ids,
    check_string,
)
from model.gallery import Scheme, gallery
from model.orders import (
    DEFAULT_GROUP_SIZE,
    DEFAULT_RANDOM,
    Order,
    OrderLikelihood,
    ar_log_likelihood,
    default_orders,
    order_likelihoods,
    teacher_forced_trace,
)
from model.plans import PlanError, parse_group_ids

LAB_TEXT = ("Mia found an old key under the porch. She opened the little box with it, and inside was a letter "
            "from her grandmother.")
BATCH_SIZE = 8
FAMILIES = (("left_to_right", "fixed"), ("right_to_left", "fixed"), ("outside_in", "fixed"), ("blocks_", "blocks"),
            ("random_groups_", "random groups"), ("random_", "random order"), ("custom", "custom"))
BEST_COLOR, WORST_COLOR = "#1a9850", "#d73027"
A_COLOR, B_COLOR = figures.ATTEND_COLOR, "#e08a00"


@dataclass
class LabResult:
    """One text scored under many orders (kept per session in gr.State)."""

    text: str
    token_ids: list[int]
    labels: list[str]  # display string per position
    orders: list[OrderLikelihood]
    ar: tuple[float, list[float | None]] | None = None  # the AR base's log p (content stream), if any
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.orders]

    def get(self, name: str) -> OrderLikelihood:
        for order in self.orders:
            if order.name == name:
                return order
        raise InputError(f"No order named {name!r} in this run; compute first, then pick one of the list.")

    def best(self) -> OrderLikelihood:
        return max(self.orders, key=lambda o: o.logp)

    def worst(self) -> OrderLikelihood:
        return min(self.orders, key=lambda o: o.logp)

    def to_dict(self) -> dict:
        return {"orders": [o.to_dict() for o in self.orders]}


def family(name: str) -> str:
    return next((label for prefix, label in FAMILIES if name.startswith(prefix)), "custom")


def order_label(name: str) -> str:
    """An order's name as the page words it (the id stays the name in the API, the JSON and the figures' meta):
    "left_to_right" -> "left to right", "outside_in" -> "outside-in", "random_3" -> "random #3",
    "random_groups_of_2_0" -> "random groups of 2 #0", "custom" -> "custom group ids"."""
    if name in ORDER_WORDS:  # the page's own orders, worded as its order list and the stage's headline word them
        return ORDER_WORDS[name]
    numbered = re.fullmatch(r"(random(?:_groups_of_\d+)?)_(\d+)", name)
    if numbered:
        return f"{numbered[1].replace('_', ' ')} #{numbered[2]}"
    return name.replace("outside_in", "outside-in").replace("_", " ")


def perplexity(logp: float, n_scored: int) -> float:
    return math.exp(-logp / max(n_scored, 1))


# --------------------------------------------------------------------------------------------------
# input


def lab_sequence(explorer: Explorer, text: str) -> torch.Tensor:
    """The text's token ids as the page tokenizes it, start token first; blanks are refused."""
    if isinstance(text, str) and not text.strip():  # in the lab's words: a whole text, no blanks to fill
        raise InputError("The text is empty: type or paste a complete text (no blanks) to score its orders.")
    masked = explorer.encode(text)
    if not bool(masked.given.all()):
        raise InputError("The order lab scores a complete text: remove the [MASK] blanks (it needs the true "
                         "tokens to score).")
    if masked.token_ids.numel() < 3:
        raise InputError("The text is too short: the order lab needs at least two tokens after the start token.")
    return masked.token_ids


def _custom_ids(custom_groups: str, length: int) -> list[int] | None:
    """The page's custom grouping, checked to score what every other order of the lab scores: all the tokens
    after the start token, the start token alone their condition. (A grouping that gives more, e.g. every
    id equal, scores fewer tokens: its log p would be higher for having less to predict, and it would be
    crowned best.)"""
    check_group_ids(custom_groups)
    if not (custom_groups or "").strip():
        return None
    try:
        ids = parse_group_ids(custom_groups, length)
    except PlanError as err:
        said = re.sub(r"^custom group ids:? ", "", str(err))  # "custom group ids are empty" reads "… are empty"
        raise InputError(f"Custom group ids{'' if said.startswith(('are', 'must')) else ':'} {said}") from None
    start, rest = ids[0], ids[1:]
    if min(rest) <= start:
        tied = [p for p, g in enumerate(rest, 1) if g <= start]
        where = f"position {tied[0]} has" if len(tied) == 1 else f"positions {figures.listed(tied)} have"
        example = " ".join(map(str, range(length))) if length <= 12 else f"0 1 2 … {length - 1}"
        raise InputError(
            f"Custom group ids: the first id (the start token's) must be lower than every other, so that the "
            f"start token alone comes first and your order, like every order here, scores all {length - 1} "
            f"tokens after it; {where} an id of {start} or lower. Give {length} ids, the first 0 and the rest 1 "
            f"or more (left to right: {example}).")
    return ids


def check_orders_json(orders_json) -> str:
    """The orders JSON as a string within MAX_ORDERS_JSON_CHARS (None and "" are the default set); checked
    before it is parsed, and before the text is scored."""
    return check_string(orders_json, MAX_ORDERS_JSON_CHARS,
                        wrong_type="orders_json must be a string holding JSON; got {kind}.",
                        too_long=f"orders_json is too long: {{n:,}} characters (at most "
                                 f"{MAX_ORDERS_JSON_CHARS:,}; at most {MAX_ORDERS} orders per call).")


def parse_orders_json(orders_json: str, length: int) -> list[Order]:
    """The API's orders: "" = the default set; else a JSON list (or {"orders": [...]}) of default-order
    names ("left_to_right", "random_3", ...) and objects {"name": ..., "group_ids": [...] or "0 1 1 2"}."""
    if not check_orders_json(orders_json).strip():
        return default_orders(length)
    try:
        data = json.loads(orders_json)
    except json.JSONDecodeError as err:
        raise InputError(f"orders_json is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno}).") from None
    except RecursionError:
        raise InputError("orders_json is nested too deeply: give a flat list of orders.") from None
    except ValueError as err:  # e.g. a number of more than 4,300 digits
        raise InputError(f"orders_json is not valid JSON: {str(err)[:120]}") from None
    if isinstance(data, dict):
        data = data.get("orders")
    if not isinstance(data, list) or not data:
        raise InputError('orders_json must be a non-empty JSON list of order names or {"name", "group_ids"} '
                         "objects (or empty for the default set).")
    if len(data) > MAX_ORDERS:
        raise InputError(f"Too many orders: {len(data)} (at most {MAX_ORDERS} per call).")
    known = {o.name: o for o in default_orders(length)}
    orders = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            if item not in known:
                raise InputError(f"Unknown order name {item[:40]!r}; the default set has {', '.join(list(known)[:5])}, "
                                 "random_0.., random_groups_of_4_0..; or give {\"name\", \"group_ids\"}.")
            orders.append(known[item])
            continue
        if not isinstance(item, dict) or "group_ids" not in item:
            raise InputError(f"orders_json item {i} must be an order name or an object with \"group_ids\".")
        groups = item["group_ids"]
        try:
            if isinstance(groups, str):
                groups = parse_group_ids(groups, length)
            if (not isinstance(groups, list) or len(groups) != length
                    or not all(isinstance(g, int) and not isinstance(g, bool) for g in groups)):
                raise PlanError(f"expected {length} integers (one per token, start token first)")
            if any(not -2**31 <= g < 2**31 for g in groups):
                raise PlanError("group ids must lie in [-2^31, 2^31)")
        except PlanError as err:
            raise InputError(f"orders_json item {i}: group_ids: {err}.") from None
        orders.append(Order(str(item.get("name") or f"order_{i}"), tuple(groups)))
    return orders


# --------------------------------------------------------------------------------------------------
# compute


def score(explorer: Explorer, token_ids: torch.Tensor, orders: list[Order]) -> list[OrderLikelihood]:
    try:
        return order_likelihoods(explorer.loaded.model, token_ids, orders, batch_size=BATCH_SIZE)
    except ValueError as err:
        raise InputError(str(err)) from None


def compute(explorer: Explorer, text: str, *, n_random: int = DEFAULT_RANDOM, group_size: int = DEFAULT_GROUP_SIZE,
            seed: int = 0, custom_groups: str = "", with_ar: bool = True) -> LabResult:
    """The page's order lab: the default set (plus the custom grouping), and the AR base when there is one."""
    ids = lab_sequence(explorer, text)
    if not 0 <= int(n_random) <= 100:
        raise InputError(f"Random orders: choose 0 to 100; got {n_random}.")
    if not 1 <= int(group_size) <= len(ids):
        raise InputError(f"Group size s must be between 1 and the number of tokens ({len(ids)}); got {group_size}.")
    orders = default_orders(len(ids), n_random=int(n_random), group_size=int(group_size), seed=int(seed),
                            custom=_custom_ids(custom_groups, len(ids)))
    lab = LabResult(text, ids.tolist(), explorer.picker_from_text(text)["tokens"], score(explorer, ids, orders))
    if with_ar:
        if explorer.base_note():
            lab.notes.append(explorer.base_note())
        else:
            try:
                lab.ar = ar_log_likelihood(explorer.base(), ids)
            except InputError as err:
                lab.notes.append(str(err))
    return lab


def api(explorer: Explorer, text: str, orders_json: str = "") -> dict:
    """The named endpoint: {"orders": [{"name", "group_ids", "logp", "token_logps"}, ...]}."""
    check_orders_json(orders_json)
    ids = lab_sequence(explorer, text)
    return {"orders": [o.to_dict() for o in score(explorer, ids, parse_orders_json(orders_json, len(ids)))]}


def stepper_result(explorer: Explorer, token_ids, order: Order, label: str) -> Result:
    """The order as a teacher-forced trace: each step commits the true tokens of the next group."""
    try:
        trace = teacher_forced_trace(explorer.loaded.model, token_ids, order)
    except (PlanError, ValueError) as err:
        raise InputError(f"Cannot step through {order.name!r}: {err}") from None
    trace.settings["method"] = label
    return explorer.result(trace, label)


def load_order(explorer: Explorer, lab: LabResult | None, name: str) -> Result:
    if lab is None:
        raise InputError("Compute the order lab first, then pick an order to step through: "
                         f"{memory.not_held('order lab result')}")
    chosen = lab.get(name)
    return stepper_result(explorer, lab.token_ids, Order(chosen.name, tuple(chosen.group_ids)),
                          f"teacher-forced {order_label(chosen.name)}")


def gallery_for(explorer: Explorer, text: str, *, group_size: int = DEFAULT_GROUP_SIZE, seed: int = 0,
                ) -> tuple[torch.Tensor, list[Scheme]]:
    """The gallery's schemes at the length of the text (so each can be stepped through on it)."""
    ids = lab_sequence(explorer, text)
    return ids, gallery(len(ids), group_size=int(group_size), seed=int(seed))


def load_scheme(explorer: Explorer, text: str, name: str, *, group_size: int = DEFAULT_GROUP_SIZE,
                seed: int = 0) -> tuple[Result, Scheme]:
    ids, schemes = gallery_for(explorer, text, group_size=group_size, seed=seed)
    scheme = next((s for s in schemes if s.title == name or s.name == name), None)
    if scheme is None:
        raise InputError(f"Unknown scheme {name!r}; choose one of {', '.join(s.title for s in schemes)}.")
    return stepper_result(explorer, ids, Order(scheme.name, scheme.group_ids), f"teacher-forced {scheme.title}"), scheme


def scheme_picker(explorer: Explorer, text: str, scheme: Scheme) -> dict:
    """The Your-text chips for a scheme: the condition (lowest group) given, every other token masked.
    Your text needs a given token besides the start token, so when the condition is the start token
    alone, the next group is given too (the groups, hence the masks, stay the scheme's)."""
    picker = explorer.picker_from_text(text)
    ranks = sorted(set(scheme.group_ids))
    given = {ranks[0]} if scheme.group_ids.count(ranks[0]) > 1 or len(ranks) < 3 else set(ranks[:2])
    picker["mask"] = [g not in given for g in scheme.group_ids]
    return picker


# --------------------------------------------------------------------------------------------------
# words


def summary_markdown(lab: LabResult) -> str:
    best, worst = lab.best(), lab.worst()
    n = len(lab.token_ids) - 1  # every order scores the tokens after the start token (_custom_ids)
    line = (f"**{len(lab.orders)} orders** of {len(lab.token_ids)} tokens, each scored exactly (log p of the "
            f"{n} tokens after the start token). Best: **{order_label(best.name)}** (log p {best.logp:.2f}, perplexity "
            f"{perplexity(best.logp, best.n_scored):.1f}) · worst: **{order_label(worst.name)}** ({worst.logp:.2f}, "
            f"perplexity {perplexity(worst.logp, worst.n_scored):.1f}) · spread {best.logp - worst.logp:.2f} nats.")
    custom = next((o for o in lab.orders if o.name == "custom"), None)
    if custom is not None:
        rank = 1 + sum(o.logp > custom.logp for o in lab.orders)
        custom_ppl = perplexity(custom.logp, custom.n_scored)
        line += (f" Your group ids: log p {custom.logp:.2f} (perplexity {custom_ppl:.1f}), "
                 f"rank {rank} of {len(lab.orders)}.")
    ltr = next((o for o in lab.orders if o.name == "left_to_right"), None)
    if lab.ar is not None and ltr is not None:
        gap = ltr.logp - lab.ar[0]
        line += (f" The AR base (content stream, left to right) gives {lab.ar[0]:.2f}; A3 left to right "
                 f"{ltr.logp:.2f}, " + (f"{gap:.2f} nats more likely: adapting to any order also fit the model to "
                                         "this kind of text." if gap >= 0 else
                                         f"{-gap:.2f} nats less likely: what adapting to any order costs here."))
    elif lab.ar is not None:
        line += f" The AR base (content stream, left to right) gives {lab.ar[0]:.2f}."
    return line + "".join(f"\n\n⚠️ {note}" for note in lab.notes)


def gallery_markdown(schemes: list[Scheme]) -> str:
    rows = ["| scheme | groups | what it is | checker |", "|---|---|---|---|"]
    for s in schemes:
        report = s.report()
        verdict = "✓ follows the A3 rule" if report.ok else f"✗ {report.n_leaks} leaks, {report.n_missing} missing"
        rows.append(f"| {s.title} | {s.n_groups} | {s.about} | {verdict} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------------
# figures: plain values in, Plotly figures out


def distribution_figure(names: list[str], logps: list[float], n_scored: list[int], *,
                        ar_logp: float | None = None) -> go.Figure:
    """A strip of log p over the orders, one row per family, best and worst marked (hover: perplexity)."""
    fams = [family(n) for n in names]
    rows = [f for _, f in FAMILIES if f in fams]
    rows = list(dict.fromkeys(rows))
    fig = go.Figure()
    for row in rows:
        idx = [i for i, f in enumerate(fams) if f == row]
        fig.add_trace(go.Scatter(
            x=[logps[i] for i in idx], y=[row] * len(idx), mode="markers", name=row, showlegend=False,
            marker=dict(size=11, color=figures.ATTEND_COLOR, opacity=0.75, line=dict(width=1, color="#ffffff")),
            hovertext=[f"{order_label(names[i])}<br>log p {logps[i]:.2f}<br>perplexity "
                       f"{perplexity(logps[i], n_scored[i]):.2f}"
                       for i in idx], hovertemplate=figures.HOVER_TEXT))
    best, worst = int(np.argmax(logps)), int(np.argmin(logps))
    marks = ((best, "best", BEST_COLOR, "star", "top left"), (worst, "worst", WORST_COLOR, "x", "top right"))
    for i, label, color, symbol, where in marks:  # labels point inwards, so they are never clipped
        fig.add_trace(go.Scatter(x=[logps[i]], y=[fams[i]], mode="markers+text",
                                 name=f"{label}: {order_label(names[i])}",
                                 marker=dict(size=18, color=color, symbol=symbol, line=dict(width=1, color="#333")),
                                 text=[f"{label}: {order_label(names[i])}"], textposition=where, cliponaxis=False,
                                 textfont=dict(color=color, size=12), hoverinfo="skip", showlegend=False))
    shapes, annotations = [], []
    if ar_logp is not None:
        shapes.append(dict(type="line", xref="x", yref="paper", x0=ar_logp, x1=ar_logp, y0=0, y1=1,
                           line=dict(color="#6b7280", dash="dot", width=1.5)))
        annotations.append(dict(x=ar_logp, y=1, xref="x", yref="paper", text="AR base", showarrow=False,
                                yanchor="bottom", font=dict(size=11, color="#6b7280")))
    fig.update_layout(
        height=110 + 48 * len(rows), margin=dict(l=10, r=20, t=34, b=40), plot_bgcolor="#ffffff",
        title=dict(text="log p of the text under each order (right = more likely)", font=dict(size=13), x=0.01),
        shapes=shapes, annotations=annotations, uirevision="order-lab",
        meta={"figure": "order_distribution", "best": names[best], "worst": names[worst], "names": list(names)},
    )
    xs = [*logps, *([ar_logp] if ar_logp is not None else [])]
    pad = 0.08 * (max(xs) - min(xs) or 1.0)
    fig.update_xaxes(title_text="log p (nats)", showgrid=True, gridcolor="#eeeeee", zeroline=False,
                     range=[min(xs) - pad, max(xs) + pad])
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=rows[::-1], ticks="", showgrid=False)
    return fig


def per_token_figure(labels: list[str], a: OrderLikelihood, b: OrderLikelihood) -> go.Figure:
    """Surprise (−log p) of every token under two orders, side by side: which tokens are easy where."""
    xs = [f"{p}:{figures.cell_text(label)}" for p, label in enumerate(labels)]
    fig = go.Figure()
    for order, color in ((a, A_COLOR), (b, B_COLOR)):
        surprise = [None if v is None else -v for v in order.token_logps]
        hover = [f"{x}<br>{order_label(order.name)}: " + ("condition (not scored)" if v is None else
                                            f"log p {-v:.2f} · p {math.exp(-v):.3f}") + f"<br>group {g}"
                 for x, v, g in zip(xs, surprise, order.group_ids, strict=True)]
        fig.add_trace(go.Bar(x=xs, y=surprise, name=f"{order_label(order.name)} (log p {order.logp:.2f})",
                             marker_color=color,
                             hovertext=hover, hovertemplate=figures.HOVER_TEXT))
    fig.update_layout(
        height=330, barmode="group", bargap=0.2, bargroupgap=0.05, margin=dict(l=10, r=10, t=34, b=10),
        plot_bgcolor="#ffffff", legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        uirevision="order-lab-tokens", meta={"figure": "order_tokens", "orders": [a.name, b.name]},
    )
    # the token labels as large as their number lets them stand side by side (the page's 12 px up to 40 tokens)
    tick = 12 if len(labels) <= 40 else 10 if len(labels) <= 64 else 9
    fig.update_xaxes(type="category", tickangle=-60, tickfont=dict(size=tick))
    fig.update_yaxes(title_text="−log p (nats, higher = harder)", gridcolor="#eeeeee")
    return fig


def gallery_figure(schemes: list[Scheme]) -> go.Figure:
    """Each scheme's content (top) and query (bottom) mask, side by side, in the page's mask colours."""
    n = len(schemes)
    fig = make_subplots(rows=2, cols=n, horizontal_spacing=0.02, vertical_spacing=0.06,
                        subplot_titles=[s.title for s in schemes] + [""] * n)
    scale = [[0, figures.BLOCKED_COLOR], [0.5, figures.BLOCKED_COLOR], [0.5, figures.ATTEND_COLOR],
             [1, figures.ATTEND_COLOR]]
    for col, scheme in enumerate(schemes, start=1):
        groups = np.asarray(scheme.group_ids)
        content, query = scheme.masks()
        for row, (stream, mask) in enumerate((("content", content), ("query", query)), start=1):
            fig.add_trace(go.Heatmap(
                z=mask.numpy().astype(np.uint8), zmin=0, zmax=1, colorscale=scale, showscale=False, xgap=1, ygap=1,
                customdata=np.stack(np.broadcast_arrays(groups[:, None], groups[None, :]), -1),
                hovertemplate=f"{scheme.title} · {stream}<br>row %{{y}} → column %{{x}}<br>"
                              "groups %{customdata[0]} → %{customdata[1]}<br>may attend: %{z}<extra></extra>",
            ), row=row, col=col)
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, constrain="domain", showline=True,
                     linecolor="#bbbbbb", mirror=True)
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, autorange="reversed", showline=True,
                     linecolor="#bbbbbb", mirror=True)
    for i in range(1, 2 * n + 1):
        fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", row=(i - 1) // n + 1, col=(i - 1) % n + 1)
    fig.update_yaxes(title_text="content", title_font=dict(size=11), row=1, col=1)
    fig.update_yaxes(title_text="query", title_font=dict(size=11), row=2, col=1)
    fig.update_annotations(font=dict(size=11))
    fig.update_layout(height=330, margin=dict(l=30, r=10, t=30, b=10), plot_bgcolor="#e6e6e6",
                      meta={"figure": "mask_gallery", "schemes": [s.name for s in schemes]})
    return fig
