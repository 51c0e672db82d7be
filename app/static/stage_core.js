// What the stage shows at a step: pure functions of (payload, step), no DOM.
// The payload comes from app/stage.py; every rule here mirrors the Plotly reference in app/figures.py,
// and tests/test_figures_stage.py runs these functions in Chromium and compares them step by step.
const A3Core = {
  // the grouping the model used at `step` (it changes per step in the official dynamic variant)
  groupsAt(P, step) {
    return step >= 0 && P.steps[step].groups ? P.steps[step].groups : P.groups;
  },

  current(P, step) {
    return step >= 0 ? P.steps[step].positions : [];
  },

  // the order grid: one cell per position, in reading order
  grid(P, step) {
    const now = new Set(A3Core.current(P, step));
    const groups = P.groups;
    return P.labels.map((label, p) => {
      const d = P.decided[p];
      if (P.given[p]) {
        return { p, state: 'given', text: P.short[p], color: P.given_color, ink: '#222222', current: false,
                 group: groups[p], decidedAt: -1 };
      }
      if (d >= 0 && d <= step) {
        return { p, state: 'decided', text: P.short[p], color: P.colors[d], ink: P.ink[d], current: now.has(p),
                 group: groups[p], decidedAt: d };
      }
      return { p, state: 'open', text: '?', color: P.open_color, ink: '#9a9a9a', current: false,
               group: groups[p], decidedAt: d };
    });
  },

  // the text: positions 1.. (the start token is not text)
  sentence(P, step) {
    const now = new Set(A3Core.current(P, step));
    const out = [];
    for (let p = 1; p < P.labels.length; p++) {
      const d = P.decided[p];
      const state = d === -1 ? 'given' : d <= step ? 'decided' : 'open';
      out.push({ p, state, current: now.has(p), label: P.labels[p], color: state === 'decided' ? P.colors[d] : null,
                 ink: state === 'decided' ? P.ink[d] : null, decidedAt: d });
    }
    return out;
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
