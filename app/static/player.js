// A3 trace player: draws one step of a decoding trace (text, order grid, group DAG, both attention
// masks) from the trace view that app/slides.py embeds in #a3-data (app.trace_view.TraceView). No
// network, no libraries. What each panel shows at a step comes from A3Core (stage_core.js, inlined
// before this file), the same rules the live stage draws with; this file only draws and steps.
// Step -1 is "before decoding" (only the given tokens), as on the page.
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("a3-data").textContent);
  const L = data.length;
  const N = data.steps.length;
  const pal = data.palette;
  const $ = (id) => document.getElementById(id);
  // it opens on the step that was on the stage when it was exported (`start`, 0-based; -1 before decoding)
  const state = { step: Number.isInteger(data.start) ? Math.max(-1, Math.min(N - 1, data.start)) : -1,
    playing: false, timer: null };

  const svg = (d) => `<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true"><path d="${d}" fill="currentColor"/></svg>`;
  const ICON_PLAY = svg("M4 2v12l10-6z"), ICON_PAUSE = svg("M3 2h4v12H3zM9 2h4v12H9z");

  // ---------------------------------------------------------------------------------------- views

  // a chip's fill: its token's colour, or one stripe per token of a split character
  const stripes = (colors) => (colors.length === 1 ? colors[0] : `linear-gradient(90deg, ${colors.map((c, i) =>
    `${c} ${(100 * i / colors.length).toFixed(2)}% ${(100 * (i + 1) / colors.length).toFixed(2)}%`).join(", ")})`);

  function drawText(step) {
    const box = $("sentence");
    box.textContent = "";
    box.dataset.step = String(step);
    for (const c of A3Core.sentence(data, step)) {
      const span = document.createElement("span");
      span.dataset.pos = String(c.p);
      span.className = `tok ${c.state}` + (c.current ? " current" : "");
      span.textContent = c.label;
      if (c.state === "decided") {  // a leading space outside the box: a line broken there leaves no sliver
        const [lead, body] = A3Core.leadingSpace(c.label);
        if (lead) box.appendChild(document.createTextNode(lead));
        span.textContent = body;
        span.style.background = stripes(c.colors);
        span.style.color = c.ink;
      }
      const where = c.positions.length > 1 ? `positions ${c.positions.join(", ")}` : `position ${c.p}`;
      span.title = `${where} · ` + (c.state === "decided" ? `decided at step ${c.decidedAt + 1}` : c.state);
      box.appendChild(span);
      if (A3Core.endsLine(c)) box.appendChild(document.createElement("br"));
    }
    const mark = box.querySelector(".current");
    if (mark) mark.scrollIntoView({ block: "nearest" });
    markMore();
  }

  // a shadow on the text panel's edge where more of the text lies beyond its scroll (as on the stage)
  function markMore() {
    const scroller = $("sentence").closest(".text");
    if (!scroller) return;
    scroller.classList.toggle("more-above", scroller.scrollTop > 1);
    scroller.classList.toggle("more-below", scroller.scrollTop + scroller.clientHeight < scroller.scrollHeight - 1);
  }

  function drawGrid(step) {
    const grid = $("grid"), box = grid.parentElement;
    const cols = data.columns, rows = Math.ceil(L / cols), gap = 3;
    const cell = Math.max(8, Math.floor(Math.min((box.clientWidth - gap * (cols - 1)) / cols,
                                                 (box.clientHeight - gap * (rows - 1)) / rows)));
    grid.style.gridTemplateColumns = `repeat(${cols}, ${cell}px)`;
    grid.style.gridAutoRows = `${cell}px`;
    const fs = Math.max(11, Math.min(Math.round(cell * 0.3), 22));
    grid.style.setProperty("--cell-fs", `${fs}px`);
    // a label wider than its cell ("smiled", "‹EFBC›": bytes that make no character) shrinks to fit, down to
    // 70% of the grid's type, before the cell cuts it with "…"
    const probe = document.createElement("canvas").getContext("2d");
    probe.font = `${fs}px ${getComputedStyle(grid).fontFamily}`;
    const room = cell - 8;
    const sizeFor = (text) => {
      const width = probe.measureText(text).width;
      return width > room ? `${Math.max(Math.floor(fs * 0.7), Math.floor(fs * room / width))}px` : "";
    };
    grid.style.setProperty("--cell-h", `${cell}px`);
    grid.textContent = "";
    const cells = A3Core.grid(data, step), place = (node, row, c0, c1) => {
      node.style.gridRow = String(row + 1);
      node.style.gridColumn = `${c0 + 1} / ${c1 + 2}`;
    };
    for (const c of cells) {
      const div = document.createElement("div");
      div.dataset.pos = String(c.p);
      div.className = `cell ${c.state}` + (c.current ? " current" : "") + (c.run >= 0 ? " in-run" : "");
      div.style.background = c.color;
      div.style.color = c.ink;
      div.textContent = cell < 20 ? "" : c.text;
      div.style.fontSize = cell < 20 ? "" : sizeFor(c.text);
      // as the stage's cells hover: the position, its token (once known), its state, its group
      div.title = `position ${c.p} · ` + (c.state === "open" ? "open: not decided yet" : `${c.label} · ` +
        (c.state === "decided" ? `decided at step ${c.decidedAt + 1}` : "given")) + ` · group ${c.group}`;
      place(div, Math.floor(c.p / cols), c.p % cols, c.p % cols);
      grid.appendChild(div);
    }
    for (const r of A3Core.runLabels(data, step)) { // a split character: one label across its cells
      const div = document.createElement("div");
      div.className = "run";
      div.textContent = cell < 20 ? "" : r.text;
      div.style.color = cells[r.row * cols + r.c0].ink;
      place(div, r.row, r.c0, r.c1);
      grid.appendChild(div);
    }
  }

  function canvasFor(id, width, height) {
    const canvas = $(id), ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    return ctx;
  }

  function fade(color, alpha) { // "rgb(r, g, b)" or "#rrggbb" -> rgba
    let r, g, b;
    if (color[0] === "#") [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
    else [r, g, b] = color.replace(/[^\d.,]/g, "").split(",").map(Number);
    return `rgba(${r}, ${g}, ${b}, ${alpha})`;
  }

  // number every k-th step, k the smallest of 1, 2, 5, 10, 20, ... at which the numbers keep apart
  function labelEvery(ctx, steps, spacing) {
    const widest = ctx.measureText(String(Math.max(steps, 1))).width + 6;
    for (const k of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]) if (k * spacing >= widest) return k;
    return Infinity;
  }

  function drawDag(step) {
    const box = $("dag").parentElement;
    const W = box.clientWidth, H = box.clientHeight;
    const ctx = canvasFor("dag", W, H);
    const D = A3Core.dag(data, step, $("reduced").checked);
    const n = D.nodes.length, offset = D.offset, edges = D.edges;
    const pad = 26, base = H - 26; // room for the "given" label under the first node
    const x = (i) => (n <= 1 ? W / 2 : pad + (i * (W - 2 * pad)) / (n - 1));
    let span = 1;
    for (const e of edges) span = Math.max(span, e.v - e.u);
    const top = Math.max(span / 2, 1.2); // as app.figures.dag_figure: a chain stays low
    const height = (u, v) => ((v - u) / 2 / top) * (base - 12);
    const styles = [["done", "rgba(80, 80, 80, 0.45)", 1], ["future", "rgba(150, 150, 150, 0.15)", 1],
                    ["current", pal.highlight, 2.5]];
    for (const [cls, color, width] of styles) {
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.beginPath();
      for (const { u, v } of edges.filter((e) => e.cls === cls)) { // a half ellipse: longer ones arch higher
        const cx = (x(u) + x(v)) / 2, rx = (x(v) - x(u)) / 2, ry = Math.max(4, height(u, v));
        ctx.moveTo(x(u), base);
        ctx.ellipse(cx, base, rx, ry, 0, Math.PI, 2 * Math.PI);
      }
      ctx.stroke();
    }
    const r = Math.max(2.5, Math.min(n <= 60 ? 7 : 4, (x(1) - x(0)) * 0.3));
    ctx.font = `${Math.round(parseFloat(getComputedStyle(document.body).fontSize) * 0.75)}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    const every = labelEvery(ctx, n - offset, n <= 1 ? W : x(1) - x(0)), boxes = [];
    for (let i = 0; i < n; i++) {
      const t = i - offset, later = t > step;
      ctx.beginPath();
      ctx.arc(x(i), base, t === step && step >= 0 ? r * 1.5 : r, 0, 2 * Math.PI);
      ctx.fillStyle = t < 0 ? pal.given : later ? fade(pal.steps[t], 0.25) : pal.steps[t];
      ctx.fill();
      ctx.lineWidth = t === step && step >= 0 ? 3 : 0.7;
      ctx.strokeStyle = t === step && step >= 0 ? pal.highlight : "#555555";
      ctx.stroke();
      if (t >= 0 && (t + 1) % every) continue; // steps count from 1, as the counter does
      const text = t < 0 && ctx.measureText("given").width + 6 > x(1) - x(0) ? "g" : t < 0 ? "given" : String(t + 1);
      ctx.fillStyle = later ? "#b0b4ba" : "#444a52";
      ctx.fillText(text, x(i), base + r + 13);
      const half = ctx.measureText(text).width / 2;
      boxes.push([Math.round(x(i) - half), Math.round(x(i) + half)]);
    }
    $("dag").dataset.edges = String(edges.length);
    $("dag").dataset.labels = JSON.stringify(boxes); // the numbers' extents: they never overlap
  }

  function drawMask(id, M, matrix, texts, step) { // matrix: row-major in display order (A3Core.masks)
    const canvas = $(id), box = canvas.parentElement;
    const side = Math.max(40, Math.min(box.clientWidth, box.clientHeight));
    const labelled = L <= 48, order = M.order, now = new Set(M.highlight);
    const labels = order.map((p) => (labelled ? `${p}:${texts[p] || "·"}` : String(p))); // "?" while open
    const base = parseFloat(getComputedStyle(document.body).fontSize);
    const probe = canvas.getContext("2d");
    let fs = labelled ? Math.max(7, Math.min(Math.round(base * 0.75), Math.floor((side - 80) / L) - 1)) : 9;
    probe.font = `${fs}px system-ui, sans-serif`;
    const widest = labelled ? Math.max(...labels.map((t) => probe.measureText(t).width)) : probe.measureText(String(L)).width;
    const gutter = Math.ceil(Math.min(side * 0.3, widest + 8));
    const cell = Math.max(1, Math.floor((side - gutter - 2) / L));
    if (labelled) fs = Math.max(7, Math.min(fs, cell));
    const x0 = gutter, y0 = Math.ceil(Math.min(side * 0.3, widest * 0.87 + 10)), size = cell * L;
    const ctx = canvasFor(id, x0 + size + 2, y0 + size + 2);
    const gap = cell >= 6 ? 1 : 0;
    ctx.fillStyle = "#e6e6e6";
    ctx.fillRect(x0, y0, size, size);
    for (let a = 0; a < L; a++) {
      for (let b = 0; b < L; b++) {
        ctx.fillStyle = matrix[a * L + b] ? pal.attend : pal.blocked;
        ctx.fillRect(x0 + b * cell, y0 + a * cell, cell - gap, cell - gap);
      }
    }
    ctx.strokeStyle = "#999999";
    ctx.lineWidth = 1;
    ctx.strokeRect(x0 - 0.5, y0 - 0.5, size + 1, size + 1);
    // axis labels: "p:token" while short enough to read, every k-th position otherwise
    const every = labelled ? 1 : Math.ceil(L / 8);
    ctx.font = `${fs}px system-ui, sans-serif`;
    for (let a = 0; a < L; a += every) {
      const p = order[a], label = labels[a];
      const hot = now.has(p);
      ctx.fillStyle = hot ? pal.highlight : "#5f6670";
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      ctx.fillText(label, x0 - 4, y0 + (a + 0.5) * cell);
      ctx.save();
      ctx.translate(x0 + (a + 0.5) * cell, y0 - 4);
      ctx.rotate(-Math.PI / 3);
      ctx.textAlign = "left";
      ctx.fillStyle = "#5f6670";
      ctx.fillText(label, 0, 0);
      ctx.restore();
    }
    // the rows this step predicts: outlined (never filled, so every cell keeps its colour)
    ctx.strokeStyle = pal.highlight;
    ctx.lineWidth = 2;
    for (let a = 0; a < L; a++) {
      if (!now.has(order[a])) continue;
      ctx.strokeRect(x0 - 1, y0 + a * cell - 1, size + 2, cell + 1);
    }
    Object.assign(canvas.dataset, { x0, y0, cell, n: L, order: order.join(","), step, ticks: JSON.stringify(labels) });
  }

  function drawMasks(step) {
    const M = A3Core.masks(data, step, $("sorted").checked), texts = A3Core.ticks(data, step); // "?" while open
    drawMask("mask-content", M, M.content, texts, step);
    drawMask("mask-query", M, M.query, texts, step);
  }

  function drawLegend() {
    const ramp = pal.steps.length > 1 ? `linear-gradient(90deg, ${pal.steps.join(", ")})` : pal.steps[0] || pal.open;
    $("legend").innerHTML =
      `<span><i class="swatch" style="background:${pal.given}"></i>given</span>` +
      `<span><i class="swatch" style="background:${pal.open};box-shadow:inset 0 0 0 1px #ccc"></i>open</span>` +
      `<span><i class="swatch current"></i>this step</span>` +
      `<span>step 1<i class="ramp" style="background:${ramp}"></i>${Math.max(N, 1)}</span>` +
      `<span><i class="swatch" style="background:${pal.attend}"></i>may attend</span>`;
  }

  // the narration's box: as tall as the longest sentence of the trace needs, so nothing below moves
  function sizeNarration() {
    const box = $("narration");
    if (box.hidden) return;
    const probe = box.cloneNode(false);
    probe.removeAttribute("id");
    Object.assign(probe.style, { position: "absolute", visibility: "hidden", width: `${box.getBoundingClientRect().width}px` });
    box.parentElement.appendChild(probe);
    const ctx = document.createElement("canvas").getContext("2d");
    ctx.font = getComputedStyle(box).font;
    let tallest = 0;
    for (const [, text] of [data.before, ...data.steps].map((s) => s.narration || "")
      .map((text) => [ctx.measureText(text).width, text]).sort((a, b) => b[0] - a[0]).slice(0, 4)) {
      probe.textContent = text;
      tallest = Math.max(tallest, probe.offsetHeight);
    }
    probe.remove();
    box.style.minHeight = `${tallest}px`;
  }

  function render() {
    const step = state.step;
    $("player").dataset.step = String(step);
    const caption = A3Core.caption(data, step);
    $("summary").textContent = caption.summary;
    $("narration").textContent = caption.narration || "";
    $("narration").hidden = !$("narrate").checked;
    $("counter").textContent = step < 0 ? `start / ${N}` : `step ${step + 1} / ${N}`;
    $("slider").value = String(step);
    drawText(step);
    drawGrid(step);
    drawDag(step);
    drawMasks(step);
  }

  // ------------------------------------------------------------------------------------- controls

  function go(step) {
    state.step = Math.max(-1, Math.min(N - 1, step));
    render();
  }

  function setPlaying(on) {
    state.playing = on;
    clearTimeout(state.timer);
    $("play").innerHTML = on ? ICON_PAUSE : ICON_PLAY;
    $("play").setAttribute("aria-label", on ? "pause" : "play");
    if (on) {
      if (state.step >= N - 1) go(-1);
      tick();
    }
  }

  function tick() {
    state.timer = setTimeout(() => {
      if (!state.playing) return;
      if (state.step >= N - 1) { setPlaying(false); return; }
      go(state.step + 1);
      tick();
    }, Number($("speed").value) * 1000);
  }

  function stepBy(delta) { setPlaying(false); go(state.step + delta); }

  const KEYS = {
    ArrowLeft: () => stepBy(-1), ArrowRight: () => stepBy(1), " ": () => setPlaying(!state.playing),
    Home: () => { setPlaying(false); go(-1); }, End: () => { setPlaying(false); go(N - 1); },
  };

  // the button focused by a click, not reached with Tab (any key press makes :focus-visible match)
  let clicked = null;
  window.addEventListener("pointerdown", (e) => { clicked = e.target.closest ? e.target.closest("button") : null; }, true);
  window.addEventListener("focusin", (e) => { if (e.target !== clicked) clicked = null; }, true);
  window.addEventListener("keydown", (e) => {
    const action = KEYS[e.key];
    if (!action || e.altKey || e.ctrlKey || e.metaKey || (e.target && e.target.tagName === "SELECT")) return;
    // a button reached with Tab: Space presses it (after a click, Space still plays or pauses)
    if (e.key === " " && e.target.tagName === "BUTTON" && e.target !== clicked) return;
    e.preventDefault(); // the focused slider or button must not act on the key a second time
    action();
  }, true);

  $("first").onclick = KEYS.Home;
  $("last").onclick = KEYS.End;
  $("prev").onclick = () => stepBy(-1);
  $("next").onclick = () => stepBy(1);
  $("play").onclick = () => setPlaying(!state.playing);
  $("slider").addEventListener("input", (e) => { setPlaying(false); go(Number(e.target.value)); });
  $("reduced").onchange = () => drawDag(state.step);
  $("sorted").onchange = () => drawMasks(state.step);
  $("narrate").onchange = () => { render(); sizeNarration(); render(); };
  window.addEventListener("resize", () => { sizeNarration(); render(); });
  $("sentence").closest(".text").addEventListener("scroll", markMore, { passive: true });

  $("title").textContent = data.title;
  Object.assign($("slider"), { min: "-1", max: String(N - 1), step: "1" });
  drawLegend();
  $("play").innerHTML = ICON_PLAY;
  render();
  sizeNarration();
  render();
  if (window.location.hash === "#play") setPlaying(true);

  window.A3Player = { go, get step() { return state.step; }, steps: N, view: data };
})();
