"""Two-stream attention masks as pure functions of group ids, and a checker that flags leaks.

A3 splits the positions of a sequence into ordered groups; `group_ids[i]` is the group of position i
(any integers: only their order matters, they need not be contiguous, sorted or smaller than L).

    content stream: row i may attend to column j  iff  g[j] <= g[i]   (own group + earlier groups)
    query stream:   row i may attend to column j  iff  g[j] <  g[i]   (strictly earlier groups)

Masks are boolean, True = may attend. One dense form feeds the model's attention, the tests and the
app's heatmaps. Padding composes on top: a padded column is never visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


def as_group_ids(group_ids, *, name: str = "group_ids") -> Tensor:
    """Validate group ids: an integer tensor (or nested list) of shape [..., L] with L >= 1."""
    if not isinstance(group_ids, Tensor):
        try:
            group_ids = torch.as_tensor(group_ids)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an integer tensor [..., L]; could not convert: {err}") from None
    if group_ids.dtype == torch.bool or group_ids.is_floating_point() or group_ids.is_complex():
        raise TypeError(
            f"{name} must hold integers (torch.long); got dtype {group_ids.dtype}. "
            f"Cast it with {name}.long() if the values are whole numbers."
        )
    if group_ids.dim() == 0 or group_ids.shape[-1] == 0:
        raise ValueError(f"{name} must have shape [..., L] with L >= 1; got shape {tuple(group_ids.shape)}.")
    return group_ids.long()


def group_visibility(row_groups: Tensor, key_groups: Tensor, *, strict: bool) -> Tensor:
    """[..., R] row groups x [..., K] key groups -> [..., R, K] bool.

    strict=False is the content rule (g_key <= g_row), strict=True the query rule (g_key < g_row).
    Rows and keys may be different sets of positions (a KV cache holds earlier groups' keys).
    """
    rows, keys = row_groups.unsqueeze(-1), key_groups.unsqueeze(-2)
    return keys < rows if strict else keys <= rows


def two_stream_masks(group_ids, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(content, query) boolean masks [..., L, L] for group ids [..., L].

    padding_mask, if given, is [..., L] with True for real tokens; padded columns become invisible in
    both masks (padded rows are left as they are: they are never scored).
    """
    g = as_group_ids(group_ids)
    content = group_visibility(g, g, strict=False)
    query = group_visibility(g, g, strict=True)
    if padding_mask is not None:
        if padding_mask.shape != g.shape:
            raise ValueError(
                f"padding_mask must have the shape of group_ids {tuple(g.shape)}; got {tuple(padding_mask.shape)}."
            )
        keep = padding_mask.bool().unsqueeze(-2)
        content, query = content & keep, query & keep
    return content, query


def group_order(group_ids) -> Tensor:
    """Positions sorted by (group, position): in this order both masks become block-triangular."""
    g = as_group_ids(group_ids)
    if g.dim() != 1:
        raise ValueError(f"group_order takes one sequence [L]; got shape {tuple(g.shape)}.")
    # A stable sort keeps position order inside each group.
    return torch.argsort(g, stable=True)


# --------------------------------------------------------------------------------------------------
# the checker


@dataclass
class MaskIssue:
    stream: str  # "content" | "query"
    row: int
    col: int
    kind: str  # "leak" | "missing"
    why: str


@dataclass
class MaskReport:
    """What `check_masks` found. `ok` is True when both masks follow the rule exactly."""

    length: int
    leaks: list[MaskIssue] = field(default_factory=list)
    missing: list[MaskIssue] = field(default_factory=list)
    unreachable_rows: list[int] = field(default_factory=list)
    n_leaks: int = 0
    n_missing: int = 0

    @property
    def ok(self) -> bool:
        return self.n_leaks == 0 and self.n_missing == 0

    @property
    def mismatches(self) -> list[MaskIssue]:
        return self.leaks + self.missing

    def summary(self) -> str:
        if self.ok:
            text = f"No leak: both masks follow the A3 rule on all {self.length}x{self.length} cells."
        else:
            text = f"{self.n_leaks} leaking cell(s), {self.n_missing} cell(s) blocked that the rule allows."
            shown = (self.leaks + self.missing)[:3]
            text += " " + " ".join(f"[{i.stream} {i.row}->{i.col}: {i.why}]" for i in shown)
        if self.unreachable_rows:
            rows = self.unreachable_rows
            many = len(rows) > 1
            text += (f" Query row{'s' if many else ''} {_ranges(rows)} see{'' if many else 's'} nothing: the first "
                     "group has no earlier one (a given token's query row is never read).")
        return text

    def to_dict(self) -> dict:
        as_dict = lambda i: dict(i.__dict__)  # noqa: E731
        return {"ok": self.ok, "length": self.length, "n_leaks": self.n_leaks, "n_missing": self.n_missing,
                "leaks": [as_dict(i) for i in self.leaks], "missing": [as_dict(i) for i in self.missing],
                "unreachable_rows": self.unreachable_rows, "summary": self.summary()}


def check_masks(content, query, group_ids, *, max_examples: int = 20) -> MaskReport:
    """Compare a pair of [L, L] masks (True = may attend) with the rule for `group_ids` [L].

    Reports every leak (a query row that sees its own position, its own group or a later group; a
    content row that sees a later group), every cell the rule allows but the mask blocks, and the
    query rows that see nothing at all.
    """
    g = as_group_ids(group_ids)
    if g.dim() != 1:
        raise ValueError(f"check_masks takes one sequence: group_ids [L]; got shape {tuple(g.shape)}.")
    length = g.numel()
    content, query = (torch.as_tensor(m).bool() for m in (content, query))
    for name, m in (("content", content), ("query", query)):
        if m.shape != (length, length):
            raise ValueError(f"{name} mask must be [{length}, {length}] to match group_ids; got {tuple(m.shape)}.")
    rule_content, rule_query = two_stream_masks(g)
    report = MaskReport(length=length)
    for stream, mask, rule in (("content", content, rule_content), ("query", query, rule_query)):
        for kind, cells in (("leak", mask & ~rule), ("missing", rule & ~mask)):
            rows, cols = cells.nonzero(as_tuple=True)
            count = rows.numel()
            if kind == "leak":
                report.n_leaks += count
            else:
                report.n_missing += count
            target = report.leaks if kind == "leak" else report.missing
            for i, j in zip(rows[:max_examples].tolist(), cols[:max_examples].tolist(), strict=True):
                target.append(MaskIssue(stream, i, j, kind, _why(stream, kind, i, j, g)))
    report.unreachable_rows = (~query.any(-1)).nonzero(as_tuple=True)[0].tolist()
    return report


def _why(stream: str, kind: str, i: int, j: int, g: Tensor) -> str:
    gi, gj = int(g[i]), int(g[j])
    if kind == "missing":
        rel = "an earlier group" if gj < gi else "its own group"
        return f"row {i} (group {gi}) should see column {j} (group {gj}, {rel})"
    if stream == "query" and i == j:
        return f"query row {i} sees its own token"
    rel = "its own group" if gj == gi else "a later group"
    return f"{stream} row {i} (group {gi}) sees column {j} (group {gj}, {rel})"


def _ranges(values: list[int]) -> str:
    out, start, prev = [], None, None
    for v in values:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = v
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)
