// What a trace shows at a step: pure functions of (view, step), no DOM.
// The view is app.trace_view.TraceView.to_dict(): the live stage gets it inside its payload
// (app/stage.py) and the offline player embeds it (app/slides.py); both draw with these functions.
// Every rule here mirrors the Plotly reference in app/figures.py (and TraceView.cells in Python);
// tests/test_figures_stage.py runs these functions in Chromium and compares them step by step.
// A character split over several tokens (P.runs: byte-level BPE splits "🧩" into three) reads as one:
// its known tokens read '…' until all are known, then the grid labels it once across its cells
// (runLabels) and the text shows it once (sentence). Labels come from the view: bytes that make no
// character already read "‹EF BC›", an open position P.open_label ("?", as the grid's open cells).
const A3Core = {
  // the grouping the model used at `step` (it changes per step in the official dynamic variant)
  groupsAt(P, step) {
    return step >= 0 && P.steps[step].groups ? P.steps[step].groups : P.groups;
  },

  current(P, step) {
    return step >= 0 ? P.steps[step].positions : [];
  },

  // the summary line, the mask checker's verdict and the narration (one sentence, app/narration.py)
  caption(P, step) {
    return step >= 0 ? P.steps[step] : P.before;
  },

  // per position: given, or decided at or before `step`
  known(P, step) {
    return P.given.map((g, p) => g || (P.decided[p] >= 0 && P.decided[p] <= step));
  },

  // per position: the index of the split character (P.runs) it belongs to, or -1
  runOf(P) {
    const out = P.labels.map(() => -1);
    P.runs.forEach(([start, end], i) => { for (let p = start; p < end; p++) out[p] = i; });
    return out;
  },

  // what each position reads (app.figures.position_texts): its short label once known, P.open_label while open;
  // a split character's known tokens read '…' until all are known, then the character on a mask tick
  // and nothing in a grid cell (the grid labels the run once: runLabels)
  texts(P, step, inGrid) {
    const known = A3Core.known(P, step);
    // a grid cell's label is P.short (app.figures.CELL_LABEL_CHARS); a tick's is cut again to
    // app.figures.MAX_LABEL_CHARS (8) characters, as the Plotly figures' ticks are
    const tick = (t) => { const c = Array.from(t); return c.length <= 8 ? t : c.slice(0, 7).join('') + '…'; };
    const out = P.short.map((t, p) => (known[p] ? (inGrid ? t : tick(t)) : P.open_label));
    for (const [start, end] of P.runs) {
      const whole = known.slice(start, end).every(Boolean);
      for (let p = start; p < end; p++) if (known[p]) out[p] = whole ? (inGrid ? '' : out[p]) : '…';
    }
    return out;
  },

  // every position at `step`, in reading order: given grey, decided in its step's colour, open
  cells(P, step) {
    const now = new Set(A3Core.current(P, step)), pal = P.palette;
    const texts = A3Core.texts(P, step, true), runOf = A3Core.runOf(P);
    return P.labels.map((label, p) => {
      const d = P.decided[p], group = P.groups[p], text = texts[p], run = runOf[p];
      if (P.given[p]) {
        return { p, state: 'given', text, label, color: pal.given, ink: pal.given_ink, current: false,
                 group, decidedAt: -1, run };
      }
      if (d >= 0 && d <= step) {
        return { p, state: 'decided', text, label, color: pal.steps[d], ink: pal.ink[d],
                 current: now.has(p), group, decidedAt: d, run };
      }
      return { p, state: 'open', text: P.open_label, label: P.open_label, color: pal.open, ink: pal.open_ink,
               current: false, group, decidedAt: d, run };
    });
  },

  // the order grid: one cell per position, in reading order
  grid(P, step) {
    return A3Core.cells(P, step);
  },

  // the grid's label of each split character whose tokens are all known: written once, across the
  // longest piece of it on one row (app.figures.run_label_cells)
  runLabels(P, step) {
    const known = A3Core.known(P, step), cols = P.columns, out = [];
    for (const [start, end] of P.runs) {
      if (!known.slice(start, end).every(Boolean)) continue;
      let best = null;
      for (let p = start; p < end;) {
        const row = Math.floor(p / cols), c0 = p % cols, c1 = Math.min(cols - 1, c0 + end - 1 - p);
        if (!best || c1 - c0 > best.c1 - best.c0) best = { row, c0, c1 };
        p += c1 - c0 + 1;
      }
      out.push({ start, end, text: P.short[start], ...best });
    }
    return out;
  },

  // the mask ticks' names after "p:" (app.figures.mask_ticks): '?' for a position still open
  ticks(P, step) {
    return A3Core.texts(P, step, false);
  },

  // a label's leading spaces and the rest: [lead, body] (a label of spaces alone stays whole: ['', label])
  leadingSpace(label) {
    const lead = /^[ \t]*/.exec(label)[0];
    return lead.length < label.length ? [lead, label.slice(lead.length)] : ['', label];
  },

  // whether a chip of the text ends its line: a decided or given token holding a line break ("↵"), as the text
  // it stands for does (the mark stays, so the break reads as a token); one break for "↵↵" too, so that a
  // paragraph's empty line does not take a line of a small box
  endsLine(chip) {
    return chip.state !== 'open' && chip.label.includes('\u21b5');
  },

  // the text: every position but the start token; a split character is one chip, whole once all its
  // tokens are known and one open box until then
  sentence(P, step) {
    const pal = P.palette, chips = [];
    const cells = A3Core.cells(P, step).filter((c) => !(c.p === 0 && P.hide_start));
    for (const c of cells) {
      const last = chips[chips.length - 1];
      if (c.run >= 0 && last && last.run === c.run) last.cells.push(c);
      else chips.push({ run: c.run, cells: [c] });
    }
    return chips.map(({ cells: cs }) => {
      const first = cs[0], positions = cs.map((c) => c.p), current = cs.some((c) => c.current);
      if (cs.some((c) => c.state === 'open')) {
        return { p: first.p, positions, state: 'open', label: P.open_label, colors: [pal.open], color: pal.open,
                 ink: pal.open_ink, current, decidedAt: -1 };
      }
      return { p: first.p, positions, state: cs.every((c) => c.state === 'given') ? 'given' : 'decided',
               label: first.label, colors: cs.map((c) => c.color), color: first.color, ink: first.ink, current,
               decidedAt: Math.max(...cs.map((c) => c.decidedAt)) };
    });
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
