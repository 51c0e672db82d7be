// The stage: draws one trace (props.value: app/stage.py's payload, a trace view) at any step, in the browser.
// Stepping, scrubbing and playing never call the server; when the step settles (not while playing)
// it is reported with trigger('step_settled', {step}) so the detail panels can follow.
// Runs as the js_on_load of app.stage_component.Stage, after stage_core.js (A3Core).
// Under the bar, one sentence narrates the step (the view's narration, app/narration.py); "narrate"
// switches it off, and the choice stays for the next run as the speed does. The headline's and the
// summary's words hover with what they mean (the view's terms); the step numbers drawn (counter, DAG,
// hovers) count from 1, as the narration does.
(() => {
  const $ = (sel) => element.querySelector(sel);
  const root = $('.a3s');
  const el = {
    step: $('#stage-step'), counter: $('#stage-counter'), play: $('#play-btn'), speed: $('#stage-speed'),
    headline: $('.a3s-headline'), summary: $('#summary'), sentence: $('#sentence'), grid: $('#stage-grid'),
    dag: $('#stage-dag'), content: $('#stage-content'), query: $('#stage-query'), verdict: $('#verdict'),
    note: $('.a3s-note'), reduce: $('.a3s-reduce'), sort: $('.a3s-sort'), empty: $('.a3s-empty'),
    hover: $('.a3s-mask-hover'), panels: $('.a3s-panels'), maskPanel: $('.a3s-mask-panel'),
    narration: $('#narration'), narrate: $('#stage-narrate'), ws: $('.a3s-ws'),
  };
  const stats = { renders: [], ticks: [] };
  const state = { P: null, step: -1, playing: false, timer: null, loop: false, t0: 0, s0: -1, settle: null };
  window.__a3stage = { state, stats };

  const present = () => document.documentElement.classList.contains('a3-present');
  // presentation mode asks the browser for the whole screen too (a projector shows no browser bars); where it
  // is refused (an embedding frame that does not allow it) the mode still gives the stage the whole window.
  // Leaving the screen (the browser's own Escape, F11) leaves the mode, and leaving the mode leaves the screen.
  let ownScreen = false;
  function fullScreen(on) {
    const doc = document.documentElement;
    if (on && !document.fullscreenElement && doc.requestFullscreen) {
      doc.requestFullscreen().then(() => {  // the mode may have been left again while the screen was asked for
        if (present()) ownScreen = true;
        else document.exitFullscreen().catch(() => {});
      }, () => { ownScreen = false; });
    } else if (!on && ownScreen && document.fullscreenElement) {
      ownScreen = false;
      document.exitFullscreen().catch(() => {});
    }
  }
  document.addEventListener('fullscreenchange', () => {
    if (document.fullscreenElement || !ownScreen) return;
    ownScreen = false;
    if (present()) document.getElementById('present-btn').click();
  });
  const hidden = () => !root.getClientRects().length;  // another tab is shown
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const n = () => (state.P && !state.P.empty ? state.P.steps.length : 0);
  const interval = () => Math.max(0.05, Number(el.speed.value) || 0.5) * 1000;
  const BRIEF_BELOW_MS = 2500;  // a whole narration (~25 words) takes a few seconds to read

  // ------------------------------------------------------------------------------------ words
  // what a part of the headline or the summary means: the view's term its text starts with, or holds
  // (the longest that does: "groups of 4 would take", not "group")
  function termFor(P, part) {
    const terms = P.terms || {}, keys = Object.keys(terms).sort((a, b) => b.length - a.length);
    const key = keys.find((k) => part.startsWith(k)) || keys.find((k) => part.includes(k));
    return key ? terms[key] : '';
  }

  // a line of parts joined by ' · ', each part a span with its meaning as the hover
  function explained(node, P, text, first) {
    node.textContent = '';
    const add = (part, title) => {
      const span = document.createElement('span');
      span.textContent = part;
      if (title) span.title = title;
      node.appendChild(span);
    };
    let rest = text;
    if (first) {  // the method's name, before the first ': ', hovers with what the method does
      const cut = text.indexOf(': ');
      if (cut > 0) {
        add(text.slice(0, cut), P.about || 'The decoding method of this run');
        node.lastChild.className = 'a3s-method';
        node.appendChild(document.createTextNode(': '));
        rest = text.slice(cut + 2);
      }
    }
    rest.split(' · ').forEach((part, i) => {
      if (i) node.appendChild(document.createTextNode(' · '));
      // the headline's asides in brackets ("(6 decodes in 14 calls, scored in 1 call; on the stage: …)") are spans of
      // their own: presentation mode leaves them out so that the line keeps its counts whole on a projector
      const aside = first ? part.match(/^(.+?)( \(.+\))$/) : null;
      add(aside ? aside[1] : part, termFor(P, part));
      if (aside) {
        add(aside[2], node.lastChild.title);
        node.lastChild.className = 'a3s-aside';
      }
    });
  }

  // the narration's box is as tall as the longest sentence of the run needs, so the panels below
  // do not move from step to step: the widest few sentences (by measureText) are laid out in a hidden
  // copy of the box, and the tallest sets its height
  let narrationFor = '';
  function sizeNarration(P) {
    const box = el.narration;
    if (!el.narrate.checked) return;
    const style = getComputedStyle(box), width = Math.round(box.getBoundingClientRect().width);
    const key = [P.id, width, style.font].join('|');
    if (key === narrationFor || width <= 0) return;
    narrationFor = key;
    const ctx = document.createElement('canvas').getContext('2d');
    ctx.font = style.font;
    const widest = [P.before, ...P.steps].map((s) => s.narration || '')
      .map((text) => [ctx.measureText(text).width, text]).sort((a, b) => b[0] - a[0]).slice(0, 4);
    const probe = box.cloneNode(false);
    probe.removeAttribute('id');
    Object.assign(probe.style, { position: 'absolute', visibility: 'hidden', width: width + 'px', minHeight: '0' });
    box.parentElement.appendChild(probe);
    let tallest = 0;
    for (const [, text] of widest) { probe.textContent = text; tallest = Math.max(tallest, probe.offsetHeight); }
    probe.remove();
    box.style.minHeight = tallest + 'px';
  }

  // ------------------------------------------------------------------------------------ drawing
  // an open chip: the grid's open cell, '?' on its fill in a dashed box (grey; orange while current), a slot
  // to fill on a projector, never a tick box
  const openChip = (t) => 'background:' + t.color + ';border:1px dashed currentColor;border-radius:4px';
  // a chip's fill: its token's colour, or one stripe per token of a split character
  const fill = (colors) => (colors.length === 1 ? colors[0] : 'linear-gradient(90deg, ' + colors.map((c, i) =>
    c + ' ' + (100 * i / colors.length).toFixed(2) + '% ' + (100 * (i + 1) / colors.length).toFixed(2) + '%').join(', ') + ')');

  function drawSentence(P, step) {
    el.sentence.innerHTML = '<div class="sentence" data-step="' + step + '">' + A3Core.sentence(P, step).map((t) =>
      chipHtml(t) + (A3Core.endsLine(t) ? '<br class="nl">' : '')).join('') + '</div>';
    wholeLines();
    keepCurrentInView(step);
    markMore(el.sentence);
  }

  // a text taller than its box: the box as tall as the whole lines that fit in it (never a line cut through
  // its letters at the bottom edge), and a shadow on the edge where more text lies beyond (markMore)
  function wholeLines() {
    const box = el.sentence, text = box.firstElementChild;
    box.style.maxHeight = '';  // the stylesheet's limit first
    if (!text || box.scrollHeight <= box.clientHeight + 1) return;
    const style = getComputedStyle(text), lineH = parseFloat(style.lineHeight);
    if (!(lineH > 0)) return;
    const pad = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom);
    const lines = Math.max(1, Math.floor((box.clientHeight - pad) / lineH));
    const frame = getComputedStyle(box).boxSizing === 'border-box' ? box.offsetHeight - box.clientHeight : 0;
    box.style.maxHeight = (lines * lineH + pad + frame) + 'px';
  }

  // a scrolling box (the text, the order grid): which of its edges have more beyond them
  function markMore(box) {
    box.classList.toggle('more-above', box.scrollTop > 1);
    box.classList.toggle('more-below', box.scrollTop + box.clientHeight < box.scrollHeight - 1);
  }

  function chipHtml(t) {
    const where = 'position' + (t.positions.length > 1 ? 's ' + t.positions.join(', ') : ' ' + t.p);
    if (t.state === 'given') {
      return '<span class="tok given" data-p="' + t.p + '" title="' + where + ' · given">' + esc(t.label) + '</span>';
    }
    if (t.state === 'open') {  // the grid's '?' in a dashed chip: an open slot, not a question mark of the text
      return '<span class="tok open' + (t.current ? ' current' : '') + '" data-p="' + t.p + '" title="' + where +
        ' · open: not decided yet" style="' + openChip(t) + '">' + esc(t.label) + '</span>';
    }
    // a leading space stays outside the coloured box: a line that breaks there leaves no sliver of box
    const [lead, body] = A3Core.leadingSpace(t.label);
    return esc(lead) + '<span class="tok decided' + (t.current ? ' current' : '') + '" data-p="' + t.p +
      '" style="background:' + fill(t.colors) + ';color:' + t.ink + '" title="' + where + ' · decided at step ' +
      (t.decidedAt + 1) + '">' + esc(body) + '</span>';
  }

  function keepCurrentInView(step) {
    // before the first step, the first blank: what the steps are about to fill
    const cur = el.sentence.querySelector('.tok.current') || (step < 0 ? el.sentence.querySelector('.tok.open') : null);
    if (cur) {  // keep the current tokens' lines in view inside the text box, never scroll the page; scrolled to
      // a line's top, so the box never shows a line cut through its letters at its top edge. A chip may wrap
      // (a label with a space inside, "‹E9 A2›"): all its lines count, from its first box to its last
      const box = el.sentence, text = box.firstElementChild, style = getComputedStyle(text);
      const rects = cur.getClientRects();
      const lineH = parseFloat(style.lineHeight) || cur.offsetHeight, pad = parseFloat(style.paddingTop) || 0;
      if (!rects.length || !(lineH > 0)) return;
      const origin = box.getBoundingClientRect().top + box.clientTop - box.scrollTop + pad;  // line 0's top
      const line = Math.max(0, Math.floor((rects[0].top - origin + 2) / lineH));
      const last = Math.max(line, Math.floor((rects[rects.length - 1].bottom - origin - 2) / lineH));
      const lineTop = pad + line * lineH, linesBottom = pad + (last + 1) * lineH;
      if (lineTop < box.scrollTop || linesBottom > box.scrollTop + box.clientHeight) {
        // the line before too, where it fits with the current ones
        const above = box.clientHeight >= (last - line + 2) * lineH ? 1 : 0;
        box.scrollTop = line - above <= 0 ? 0 : pad + (line - above) * lineH;
      }
    }
  }

  // the grid's cell size and type size: cells fill the panel (a short text on a big screen gets big cells,
  // not a small block above an empty panel); type never goes below a readable size: when the cells that
  // would take are too many for the panel, the grid scrolls and follows the step
  function gridMetrics(P, box) {
    const cols = P.columns, rows = Math.ceil(P.labels.length / cols), gap = 2;
    const minFont = present() ? 13 : 11;
    const w = Math.max(minFont * 2.8, Math.min(170, Math.floor((box.width - 2 - gap * (cols - 1)) / cols)));
    const fitH = Math.floor((box.height - 2 - gap * (rows - 1)) / rows);
    const h = Math.max(Math.ceil(minFont * 1.8), Math.min(fitH, 140, Math.max(44, Math.round(w * 1.3))));
    const font = Math.max(minFont, Math.min(present() ? 28 : 22, Math.floor(h * 0.42), Math.floor(w / 4.2)));
    return { cols, w: Math.floor(w), h, font };
  }

  // a label too wide for its cell at the grid's type size gets a smaller size of its own ("grandmother" whole
  // rather than "grandm…"), never under 9 px; a word that would not be whole even at 9 px keeps the grid's
  // size, cut with an ellipsis (smaller and still cut helps nobody: a long text's 11 px cells stay as they were).
  // Widths in em of the monospace type: 0.61 a character, 1 for the wide ones (CJK, emoji)
  function cellFont(text, m) {
    let ems = 0;
    for (const ch of text) ems += ch.codePointAt(0) >= 0x2e80 ? 1 : 0.61;
    const room = m.w - 6;  // the cell's padding and outline
    if (ems * m.font <= room) return '';
    const fits = Math.floor(room / ems);
    return fits >= 9 ? ';font-size:' + fits + 'px' : '';
  }

  function cellTitle(P, c) {
    if (c.p === 0 && P.hide_start) {
      return 'position 0 · ' + P.labels[0] + ': the start token every text begins with (not shown in the text) · given';
    }
    return 'position ' + c.p + ' · ' + (c.state === 'open' ? 'open: not decided yet' : P.labels[c.p] + ' · ' +
      (c.state === 'given' ? 'given' : 'decided at step ' + (c.decidedAt + 1))) + ' · group ' + c.group;
  }

  function drawGrid(P, step) {
    const box = el.grid.parentElement, m = gridMetrics(P, box.getBoundingClientRect());
    el.grid.style.gridTemplateColumns = 'repeat(' + m.cols + ', ' + m.w + 'px)';
    el.grid.style.gridAutoRows = m.h + 'px';
    el.grid.style.fontSize = m.font + 'px';
    el.grid.style.lineHeight = m.h + 'px';
    const cells = A3Core.grid(P, step);
    const at = (p) => 'grid-row:' + (Math.floor(p / m.cols) + 1) + ';grid-column:' + (p % m.cols + 1);
    el.grid.innerHTML = cells.map((c) => '<div class="cell ' + c.state + (c.current ? ' current' : '') +
      (c.run >= 0 ? ' in-run' : '') + '" data-p="' + c.p + '" style="' + at(c.p) + ';background:' + c.color +
      ';color:' + c.ink + cellFont(c.text, m) + '" title="' + esc(cellTitle(P, c)) + '">' + esc(c.text) + '</div>').join('') +
      A3Core.runLabels(P, step).map((r) => '<div class="run" data-start="' + r.start + '" data-end="' + r.end +
        '" style="grid-row:' + (r.row + 1) + ';grid-column:' + (r.c0 + 1) + ' / ' + (r.c1 + 2) + ';color:' +
        cells[r.row * m.cols + r.c0].ink + '">' + esc(r.text) + '</div>').join('');
    // rows that outgrow the box: room under the last one so that the box, scrolled to its end, still starts at
    // a row's top (never a row cut at the top edge)
    // (measured without the room added before, never removed first: the box would clamp its scroll meanwhile)
    const pitch = m.h + GRID_GAP, added = parseFloat(el.grid.style.paddingBottom) || 0;
    const over = box.scrollHeight - added - box.clientHeight, rest = over % pitch;
    const room = over > 0 && rest > 0.5 ? pitch - rest : 0;
    if (room !== added) el.grid.style.paddingBottom = room ? room + 'px' : '';
    const cur = el.grid.querySelector('.cell.current') || (step < 0 ? el.grid.querySelector('.cell.open') : null);
    if (cur && box.scrollHeight > box.clientHeight) {  // follow the step inside the box, never scroll the page
      const top = cur.getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop;
      if (top < box.scrollTop || top + m.h > box.scrollTop + box.clientHeight || box.scrollTop % pitch > 0.5) {
        // the current row near the middle, the box starting at a row's top (a relayout that clamped the
        // scroll off a row's top is put back on one)
        const fit = Math.max(1, Math.floor((box.clientHeight + GRID_GAP) / pitch));
        box.scrollTop = Math.max(0, (Math.round(top / pitch) - Math.floor((fit - 1) / 2)) * pitch);
      }
    }
    markMore(box);
  }

  const GRID_GAP = 2;  // the grid's row gap (stage.css: .a3s-grid { gap: 2px })

  function sizeCanvas(canvas) {
    const r = canvas.parentElement.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(10, Math.floor(r.width)), h = Math.max(10, Math.floor(r.height));
    if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
      canvas.width = w * dpr; canvas.height = h * dpr;
      canvas.style.width = w + 'px'; canvas.style.height = h + 'px';
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  // which nodes get a number: every k-th step, k the smallest of 1, 2, 5, 10, 20, ... at which the
  // numbers keep clear of each other (present mode's larger type included)
  function labelEvery(ctx, count, offset, spacing) {
    const widest = ctx.measureText(String(Math.max(count - offset, 1))).width + 6;
    for (const k of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]) if (k * spacing >= widest) return k;
    return Infinity;
  }

  function drawDag(P, step) {
    const { ctx, w, h } = sizeCanvas(el.dag);
    const D = A3Core.dag(P, step, el.reduce.checked);
    const count = D.nodes.length, font = present() ? 16 : 12;
    let span = 1;
    for (const e of D.edges) span = Math.max(span, e.v - e.u);
    const x0 = -0.6, x1 = Math.max(count - 0.4, 0.7);
    const spacing = (w - 8) / (x1 - x0), size = Math.max(2.5, Math.min(count <= 24 ? 9 : 7, spacing * 0.32));
    const top = Math.max(span / 2, 1.2), below = size * 1.6 + font + 8;  // room under the line for the numbers
    const X = (x) => 4 + (x - x0) / (x1 - x0) * (w - 8);
    const Y = (y) => h - below - y / top * (h - below - 4);
    const pts = span > 120 ? 6 : 12;
    const arc = (e) => {
      ctx.moveTo(X(e.u), Y(0));
      for (let i = 1; i <= pts; i++) {
        const s = i / pts;
        ctx.lineTo(X(e.u + (e.v - e.u) * s), Y((e.v - e.u) / 2 * Math.sin(Math.PI * s)));
      }
    };
    for (const [cls, color, width] of [['future', 'rgba(150,150,150,0.15)', 1], ['done', 'rgba(80,80,80,0.45)', 1],
                                       ['current', P.palette.highlight, 2.5]]) {
      ctx.beginPath(); ctx.strokeStyle = color; ctx.lineWidth = width;
      for (const e of D.edges) if (e.cls === cls) arc(e);
      ctx.stroke();
    }
    for (let i = 0; i < count; i++) {
      const t = i - D.offset, isGiven = t < 0;
      ctx.globalAlpha = isGiven || t <= step ? 1 : 0.25;
      ctx.beginPath(); ctx.arc(X(i), Y(0), i === D.current ? size * 1.6 : size, 0, 2 * Math.PI);
      ctx.fillStyle = isGiven ? P.palette.given : P.palette.steps[t]; ctx.fill();
      ctx.lineWidth = i === D.current ? 3 : 0.7;
      ctx.strokeStyle = i === D.current ? P.palette.highlight : '#444'; ctx.stroke();
      ctx.globalAlpha = 1;
    }
    drawDagNumbers(ctx, P, D, step, { X, y: Y(0) + size * 1.6 + 3, spacing, font });
    dagDrawn = { x0, x1, w, y: Y(0), size, offset: D.offset, count };
    el.dag.dataset.nodes = JSON.stringify([X(0), X(1) - X(0), Y(0)].map(Math.round));  // node i at x + i * dx
    // the plot area (the axes' frame, as Plotly's figure has one): tests measure how much of the stage it fills
    el.dag.dataset.plot = JSON.stringify([X(x0), Y(top), X(x1) - X(x0), h - Y(top)].map(Math.round));
  }

  // a dot under the pointer says which step it is and what it decided (nothing yet for a later step)
  let dagDrawn = null;
  const DAG_TITLE = el.dag.getAttribute('title') || '';
  function dagNodeTitle(P, t) {
    if (t < 0) return 'The given tokens (' + P.given.filter(Boolean).length + '): what every step starts from';
    if (t > state.step) return 'Step ' + (t + 1) + ': not decided yet';
    const s = P.steps[t];
    return 'Step ' + (t + 1) + ': ' + s.named + ' · group ' + s.group + ' · saw ' + s.context +
      (s.context === 1 ? ' token' : ' tokens');
  }
  el.dag.addEventListener('mousemove', (e) => {
    const g = dagDrawn, P = state.P;
    if (!g || !P || P.empty) return;
    const i = Math.round(g.x0 + (e.offsetX - 4) / (g.w - 8) * (g.x1 - g.x0));
    const near = i >= 0 && i < g.count && Math.abs(e.offsetY - g.y) <= Math.max(12, 2 * g.size);
    el.dag.title = near ? dagNodeTitle(P, i - g.offset) : DAG_TITLE;
  });

  function drawDagNumbers(ctx, P, D, step, { X, y, spacing, font }) {
    ctx.font = font + 'px system-ui, sans-serif'; ctx.textAlign = 'center'; ctx.textBaseline = 'top';
    const every = labelEvery(ctx, D.nodes.length, D.offset, spacing), boxes = [];
    for (let i = 0; i < D.nodes.length; i++) {
      const t = i - D.offset;
      if (t >= 0 && (t + 1) % every) continue;  // steps count from 1, as the counter does: k, 2k, ...
      let text = t < 0 ? 'given' : String(t + 1);
      if (t < 0 && ctx.measureText(text).width + 6 > spacing) text = 'g';
      const half = ctx.measureText(text).width / 2;
      ctx.fillStyle = t === step ? P.palette.highlight : '#333';
      ctx.fillText(text, X(i), y);
      boxes.push([Math.round(X(i) - half), Math.round(X(i) + half)]);
    }
    el.dag.dataset.labels = JSON.stringify(boxes);  // the numbers' extents: tests check they never overlap
  }

  function drawMask(canvas, M, matrix, P) {
    const { ctx, w, h } = sizeCanvas(canvas);
    const L = M.L, side = Math.min(w, h), cell = side / L, ox = (w - side) / 2;
    const gap = L <= 64 && cell >= 4 ? 1 : 0;
    ctx.fillStyle = '#e6e6e6'; ctx.fillRect(ox, 0, side, side);
    if (gap) {
      for (let r = 0; r < L; r++) {
        for (let c = 0; c < L; c++) {
          ctx.fillStyle = matrix[r * L + c] ? P.palette.attend : P.palette.blocked;
          ctx.fillRect(ox + c * cell + gap / 2, r * cell + gap / 2, cell - gap, cell - gap);
        }
      }
    } else {  // one pixel per cell, scaled up without smoothing
      const img = new ImageData(L, L);
      const on = hex(P.palette.attend), off = hex(P.palette.blocked);
      for (let i = 0; i < L * L; i++) img.data.set(matrix[i] ? on : off, i * 4);
      const off2 = document.createElement('canvas'); off2.width = L; off2.height = L;
      off2.getContext('2d').putImageData(img, 0, 0);
      ctx.imageSmoothingEnabled = false; ctx.drawImage(off2, ox, 0, side, side);
    }
    const where = new Map(M.order.map((p, i) => [p, i]));
    ctx.fillStyle = 'rgba(228, 87, 46, 0.25)'; ctx.strokeStyle = P.palette.highlight; ctx.lineWidth = 1;
    for (const p of M.highlight) {
      const r = where.get(p);
      ctx.fillRect(ox, r * cell, side, cell); ctx.strokeRect(ox, r * cell, side, cell);
    }
    canvas.dataset.side = side; canvas.dataset.ox = ox;
  }

  const hex = (c) => {
    const m = c.match(/^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i);
    return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16), 255] : [0, 0, 0, 255];
  };

  let masksNow = null;
  function drawMasks(P, step) {
    masksNow = A3Core.masks(P, step, el.sort.checked);
    drawMask(el.content, masksNow, masksNow.content, P);
    drawMask(el.query, masksNow, masksNow.query, P);
  }

  // the counter's words. The counter is as wide as the longest of them for this run (in ch of its monospace
  // type), so the slider beside it keeps its width from "Before decoding" to the last step. Presentation
  // type leaves no room in the bar at 1366 px for "Before decoding · 0/20": there the start reads "Step 0/20"
  const counterText = (step, total) => (step >= 0 ? 'Step ' + (step + 1) + '/' + total
    : (present() ? 'Step 0/' : 'Before decoding · 0/') + total);
  function sizeCounter(total) {
    const longest = total ? Math.max(counterText(-1, total).length, counterText(total - 1, total).length) + 'ch' : '';
    if (el.counter.style.minWidth !== longest) el.counter.style.minWidth = longest;
  }

  // while the stage plays faster than a sentence can be read, the narration says only what the step decides
  // (its brief); paused or stepped, the whole sentence
  function narrate(caption) {
    el.narration.textContent = (state.playing && interval() < BRIEF_BELOW_MS && caption.brief) || caption.narration || '';
  }

  function render() {
    const P = state.P;
    if (!P || P.empty) return;
    const t = performance.now(), step = state.step, total = n();
    el.step.value = String(step);
    sizeCounter(total);
    el.counter.textContent = counterText(step, total);
    el.counter.dataset.step = String(step);
    const caption = A3Core.caption(P, step);
    explained(el.summary, P, caption.summary, false);
    el.verdict.textContent = caption.verdict;
    narrate(caption);
    el.narration.hidden = !el.narrate.checked;
    sizeNarration(P);
    layoutPanels();
    drawSentence(P, step);
    drawGrid(P, step);
    drawDag(P, step);
    drawMasks(P, step);
    stats.renders.push(performance.now() - t);
    if (stats.renders.length > 2000) stats.renders.splice(0, 1000);
  }

  // ----------------------------------------------------------------------------------- stepping
  function setStep(step, { user = false } = {}) {
    const total = n();
    state.step = Math.max(-1, Math.min(total - 1, step));
    render();
    if (user) { state.loop = false; }
    if (!state.playing) settleSoon();
  }

  function settleSoon() {
    clearTimeout(state.settle);
    state.settle = setTimeout(() => trigger('step_settled', { step: state.step, id: state.P && state.P.id }), 250);
  }

  function schedule() {
    const due = state.t0 + (state.step - state.s0 + 1) * interval();
    state.timer = setTimeout(tick, Math.max(0, due - performance.now()));
  }

  function tick() {
    if (!state.playing) return;
    if (hidden()) return pause(false);  // hidden between a tick and the resize observer's call: stop where it is
    if (state.step >= n() - 1) {
      if (state.loop) {  // the first-visit example keeps moving until someone touches it
        state.timer = setTimeout(() => { if (state.playing) { setStep(-1); restartClock(); schedule(); } }, 2500);
        return;
      }
      return pause();
    }
    setStep(state.step + 1);
    stats.ticks.push(performance.now());
    if (stats.ticks.length > 5000) stats.ticks.splice(0, 2500);
    schedule();
  }

  function restartClock() { state.t0 = performance.now(); state.s0 = state.step; }

  function play() {
    if (!n() || hidden()) return;  // e.g. the first visit's autoplay, due after the visitor opened another tab
    if (state.step >= n() - 1) setStep(-1);
    state.playing = true; el.play.textContent = '❚❚ pause'; root.classList.add('playing');
    restartClock(); stats.ticks = [performance.now()];
    schedule();
  }

  // settle: report the step (step_settled), as a stop the visitor made; a stage stopped because another tab
  // hides it sends nothing: the tabs that follow it read its step off the counter when opened (Step details)
  // or pressed (Export), and a queued event per tab switch would take a place in a busy server's queue
  function pause(settle = true) {
    state.playing = false; clearTimeout(state.timer); el.play.textContent = '▶ play';
    root.classList.remove('playing');
    if (state.P && !state.P.empty) narrate(A3Core.caption(state.P, state.step));
    if (settle) settleSoon();
  }

  function userStep(to) { state.loop = false; if (state.playing) pause(); setStep(to, { user: true }); }

  element.addEventListener('click', (e) => {
    const b = e.target.closest('button');
    if (!b) return;
    const id = b.id;
    if (id === 'first-btn') userStep(-1);
    else if (id === 'prev-btn') userStep(state.step - 1);
    else if (id === 'next-btn') userStep(state.step + 1);
    else if (id === 'last-btn') userStep(n() - 1);
    else if (id === 'play-btn') { state.loop = false; state.playing ? pause() : play(); }
    else if (id === 'present-btn') {
      const on = document.documentElement.classList.toggle('a3-present');
      b.setAttribute('aria-pressed', String(on));
      fullScreen(on);
      requestAnimationFrame(() => { fit(); render(); });
    } else if (id === 'edit-btn') {  // the text tab is for the page: presentation mode ends with the stage
      if (present()) document.getElementById('present-btn').click();
      trigger('edit', {});
    }
  });
  el.step.addEventListener('input', () => userStep(Number(el.step.value)));
  for (const box of [el.sentence, el.grid.parentElement]) {
    box.addEventListener('scroll', () => markMore(box), { passive: true });
  }
  el.speed.addEventListener('change', () => { if (state.playing) restartClock(); });
  el.reduce.addEventListener('change', render);
  el.sort.addEventListener('change', render);
  el.narrate.addEventListener('change', () => { narrationFor = ''; render(); });
  // a box ticked with the mouse hands the focus back, so the stage's keys go on working (a focused
  // control keeps its keys to itself); one reached with Tab keeps the focus
  let pointed = false;
  element.addEventListener('pointerdown', () => { pointed = true; });
  element.addEventListener('keydown', () => { pointed = false; });
  element.addEventListener('change', (e) => {
    if (pointed && e.target.type === 'checkbox') e.target.blur();
  });

  // the mask under the pointer, in words
  for (const [canvas, name] of [[el.content, 'content'], [el.query, 'query']]) {
    canvas.addEventListener('mouseleave', () => { el.hover.textContent = ''; });
    canvas.addEventListener('mousemove', (e) => {
      if (!masksNow) return;
      const side = Number(canvas.dataset.side), ox = Number(canvas.dataset.ox), L = masksNow.L;
      const r = Math.floor((e.offsetY) / side * L), c = Math.floor((e.offsetX - ox) / side * L);
      if (r < 0 || c < 0 || r >= L || c >= L) { el.hover.textContent = ''; return; }
      const i = masksNow.order[r], j = masksNow.order[c], said = A3Core.ticks(state.P, state.step);  // '?' while open
      const yes = (name === 'content' ? masksNow.content : masksNow.query)[r * L + c];
      el.hover.textContent = name + ': row ' + i + ' “' + said[i] + '” (group ' + masksNow.groups[i] +
        ') ' + (yes ? 'may attend to' : 'is blocked from') + ' column ' + j + ' “' + said[j] + '” (group ' +
        masksNow.groups[j] + ')';
    });
  }

  // ------------------------------------------------------------------------------ size and load
  // the panels: the grid and the masks side by side, the DAG a strip across the bottom. The masks get
  // square canvases as tall as their row allows (their panel at most 55% of the width); the grid gets the
  // rest. A narrow window stacks the panels instead (stage.css).
  let tallest = { key: '', overhead: 0 };
  function layoutPanels() {
    const panels = el.panels, box = panels.getBoundingClientRect();
    if (box.height < 100) return;
    if (window.innerWidth <= 900) { maskWording(el.maskPanel.getBoundingClientRect().width); return; }
    maskWording(Math.round(0.3 * box.width));
    const dagH = Math.round(Math.max(present() ? 130 : 118, Math.min(0.3 * box.height, 330)));
    setVar(panels, '--dag-h', dagH + 'px');
    // where the masks' row is short (presentation type on a laptop), their column runs down past the DAG
    const canvasBox = el.content.parentElement.getBoundingClientRect(), panel = el.maskPanel.getBoundingClientRect();
    const chrome = panel.width - 2 * canvasBox.width;
    // the verdict wraps taller in the narrow column beside the grid than in the tall one: decide with the
    // tallest chrome seen at this size, or the layout would flip back and forth between the two
    const key = [state.P && state.P.id, Math.round(box.width), Math.round(box.height), present()].join('|');
    const overhead = Math.max(panel.height - canvasBox.height, tallest.key === key ? tallest.overhead : 0);
    tallest = { key, overhead };
    // the masks' share of the width: in presentation mode the grid keeps more, so that its type stays large on a
    // laptop's 1366 px (at 55% its cells fell to 13 px, smaller than without presentation mode)
    const share = present() ? 0.42 : 0.55;
    const widest = (share * box.width - chrome) / 2;
    const beside = Math.min(box.height - dagH - 8 - overhead, widest), tall = Math.min(box.height - overhead, widest);
    panels.classList.toggle('masks-tall', !present() && beside < 0.5 * tall);  // presenting: the grid keeps its width
    for (let pass = 0; pass < 3; pass++) {  // the verdict re-wraps with the width: settle in a few passes
      const inner = el.content.parentElement.getBoundingClientRect(), now = el.maskPanel.getBoundingClientRect();
      const side = Math.floor(Math.min(inner.height, (share * box.width - chrome) / 2));
      // never under 30% of the width: a narrower column wraps the verdict taller, which shrinks the
      // squares again, until both masks no longer fit side by side
      const width = Math.max(Math.round(0.3 * box.width), Math.round(2 * side + chrome));
      if (Math.abs(width - now.width) < 2) break;
      setVar(panels, '--mask-w', width + 'px');
    }
  }

  // the masks' heading ("row i may attend to / sees column j", on the title's line or the next) and their
  // captions ("content stream: g[j] ≤ g[i]" or "content: ..."), by the narrowest column the window gives the
  // masks (`narrowest` px: 30% of the panels' width; the whole width where the panels stack). Never by the
  // column this run got, which follows the lines above the panels (the example's note, a longer narration):
  // the example and the same run made again read alike, and a window reads the same for every run
  function maskWording(narrowest) {
    const panel = el.maskPanel, figure = el.content.closest('figure');
    const chrome = panel.getBoundingClientRect().width - 2 * figure.getBoundingClientRect().width;  // padding, gap
    const big = present(), caption = (narrowest - chrome) / 2;
    const hint = big ? (narrowest > 640 ? 'long' : 'wrap')
      : narrowest > 480 ? 'long' : narrowest > 400 ? 'short' : 'wrap';
    if (panel.dataset.hint !== hint) panel.dataset.hint = hint;
    const captions = caption <= (big ? 205 : 170) ? 'short' : 'long';
    if (panel.dataset.captions !== captions) panel.dataset.captions = captions;
  }

  const setVar = (node, name, value) => { if (node.style.getPropertyValue(name) !== value) node.style.setProperty(name, value); };

  function fit() {  // the stage fills the window below its top edge: everything visible at once
    const top = root.getBoundingClientRect().top + window.scrollY;
    const height = Math.max(460, window.innerHeight - Math.max(0, top) - 12) + 'px';
    if (root.style.height !== height) root.style.height = height;
  }

  function load(P) {
    pause();
    clearTimeout(state.settle);
    state.P = P;
    root.classList.toggle('is-empty', !P || !!P.empty);
    el.empty.textContent = P && P.empty ? P.note : '';
    if (!P || P.empty) { el.counter.textContent = 'No trace'; sizeCounter(0); return; }
    el.note.textContent = P.note || '';
    // the legend names the whitespace marks the text uses (figures.display_label), and only those
    const marks = [['↵', 'line break'], ['⇥', 'tab'], ['·', 'space']].filter(([m]) =>
      (P.labels || []).some((label) => label.includes(m) && (m !== '·' || /^[·↵⇥]+$/.test(label.trim()))));
    el.ws.hidden = !marks.length;
    el.ws.textContent = marks.length ? ' · ' + marks.map(([m, what]) => m + ' ' + what).join(' · ') : '';
    explained(el.headline, P, P.headline || '', true);
    narrationFor = '';
    el.step.min = '-1'; el.step.max = String(n() - 1);
    if (P.speed) el.speed.value = String(P.speed);  // only when the payload asks: a new run keeps the speed set
    state.loop = !!P.loop;
    // a payload may open on a step of its own ("start": a branch lands where it was branched), paused there
    // and reported as a step the user chose (step_settled)
    state.step = Number.isInteger(P.start) ? Math.max(-1, Math.min(n() - 1, P.start)) : -1;
    fit();
    render();
    if (state.step >= 0 && !P.autoplay) settleSoon();
    if (P.autoplay) setTimeout(() => { if (state.P === P && !state.playing && state.step === -1) play(); }, 400);
  }

  // redraw when any panel changes size (window, presentation mode, fonts); at most once per frame
  let queued = false;
  const resized = new ResizeObserver(() => {
    // hidden (another tab shown): a playing stage stops on the step it showed, so what the other tabs read
    // off it (Step details, Export's "this step") is a step the visitor saw, and stays it
    if (state.playing && hidden()) pause(false);
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; if (state.P && !state.P.empty) render(); });
  });
  resized.observe(root);
  element.querySelectorAll('.a3s-canvasbox, .a3s-gridbox').forEach((box) => resized.observe(box));
  window.addEventListener('resize', fit);
  // what sits above the stage (the header, a warning) may render after the stage: fit again when it does
  new ResizeObserver(() => fit()).observe(document.body);
  window.__a3stage.play = play; window.__a3stage.pause = () => pause(); window.__a3stage.setStep = (s) => userStep(s);
  window.__a3stage.load = load;  // any payload, as a new value would bring it (tests, the console)
  watch('value', () => load(props.value));
  load(props.value);
})();
