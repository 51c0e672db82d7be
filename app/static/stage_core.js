// What a trace shows at a step: pure functions of (view, step), no DOM.
// The view is app.trace_view.TraceView.to_dict(): the live stage gets it inside its payload
// (app/stage.py) and the offline player embeds it (app/slides.py); both draw with these functions.
// Every rule here mirrors the Plotly reference in app/figures.py (and TraceView.cells in Python);
// tests/test_figures_stage.py runs these functions in Chromium and compares them step by step.
const A3Core = {
  // the grouping the model used at `step` (it changes per step in the official dynamic variant)
  groupsAt(P, step) {
    return step >= 0 && P.steps[step].groups ? P.steps[step].groups : P.groups;
  },

  current(P, step) {
    return step >= 0 ? P.steps[step].positions : [];
  },

  // the summary line and the mask checker's verdict
  caption(P, step) {
    return step >= 0 ? P.steps[step] : P.before;
  },

  // every position at `step`, in reading order: given grey, decided in its step's colour, open
  cells(P, step) {
    const now = new Set(A3Core.current(P, step)), pal = P.palette;
    return P.labels.map((label, p) => {
      const d = P.decided[p], group = P.groups[p];
      if (P.given[p]) {
        return { p, state: 'given', text: P.short[p], label, color: pal.given, ink: pal.given_ink, current: false,
                 group, decidedAt: -1 };
      }
      if (d >= 0 && d <= step) {
        return { p, state: 'decided', text: P.short[p], label, color: pal.steps[d], ink: pal.ink[d],
                 current: now.has(p), group, decidedAt: d };
      }
      return { p, state: 'open', text: '?', label: '▢', color: pal.open, ink: pal.open_ink, current: false,
               group, decidedAt: d };
    });
  },

  // the order grid: one cell per position, in reading order
  grid(P, step) {
    return A3Core.cells(P, step);
  },

  // the text: every position but the start token
  sentence(P, step) {
    return A3Core.cells(P, step).filter((c) => !(c.p === 0 && P.hide_start));
  },

  // the DAG: every edge u -> v classed as done, into the current step, or later
  dag(P, step, reduced) {
    const off = P.dag.offset;
    const here = step >= 0 ? step + off : -1;
    const edges = (reduced ? P.dag.reduced : P.dag.edges).map(([u, v]) => ({
      u, v, cls: v > step + off ? 'future' : v === here ? 'current' : 'done',
    }));
    return { edges, nodes: P.dag.nodes, offset: off, current: here };
  },

  // display order of the mask rows and columns: by position, or stably by (group, position)
  maskOrder(groups, sorted) {
    const order = groups.map((_, i) => i);
    if (sorted) order.sort((a, b) => (groups[a] - groups[b]) || (a - b));
    return order;
  },

  // both masks in display order (row-major, 1 = may attend) and the rows to highlight
  masks(P, step, sorted) {
    const groups = A3Core.groupsAt(P, step);
    const order = A3Core.maskOrder(groups, sorted);
    const L = order.length;
    const content = new Uint8Array(L * L), query = new Uint8Array(L * L);
    for (let r = 0; r < L; r++) {
      const gi = groups[order[r]];
      for (let c = 0; c < L; c++) {
        const gj = groups[order[c]];
        content[r * L + c] = gj <= gi ? 1 : 0;
        query[r * L + c] = gj < gi ? 1 : 0;
      }
    }
    return { order, content, query, L, highlight: A3Core.current(P, step).slice(), groups };
  },
};
