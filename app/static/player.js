// A3 trace player: draws one step of a decoding trace (text, order grid, group DAG, both attention
// masks) from the JSON that app/slides.py embeds in #a3-data. No network, no libraries.
// What each panel shows follows app/figures.py, the Python reference:
//   masks    content: row i may attend to column j iff g[j] <= g[i]; query: iff g[j] < g[i],
//            for the grouping the model used at the step (it changes per step in dynamic variants)
//   grid     positions in reading order, coloured by the step that decided them (up to this step)
//   DAG      the edges of app.figures.dependency_graph, as an arc diagram in decoding order
// Step -1 is "before decoding" (only the given tokens), as on the page.
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("a3-data").textContent);
  const L = data.length;
  const N = data.steps.length;
  const pal = data.palette;
  const $ = (id) => document.getElementById(id);
  const state = { step: -1, playing: false, timer: null };

  // ---------------------------------------------------------------------------------------- model

  const display = (t) => t.replace(/\r/g, "").replace(/\n/g, "↵").replace(/\t/g, "⇥");
  const short = (t) => (t.length <= 8 ? t : t.slice(0, 7) + "…");

  function tokensAt(step) { // as DecodeTrace.tokens_at: null where still open
    const tokens = data.labels.slice();
    for (let t = 0; t <= step && t < N; t++) {
      const s = data.steps[t];
      s.positions.forEach((p, k) => { tokens[p] = s.tokens[k]; });
    }
    return tokens;
  }

  function groupsAt(step) {
    const s = step >= 0 ? data.steps[step] : null;
    return s && s.group_ids ? s.group_ids : data.group_ids;
  }

  function masks(groups) { // (L, L) 0/1, rows i, columns j: the contract of model.masks.two_stream_masks
    const n = groups.length;
    const content = new Uint8Array(n * n), query = new Uint8Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        content[i * n + j] = groups[j] <= groups[i] ? 1 : 0;
        query[i * n + j] = groups[j] < groups[i] ? 1 : 0;
      }
    }
    return { content, query };
  }

  function displayOrder(groups) { // positions in (group, position) order when sorting, else as they are
    const order = groups.map((_, p) => p);
    if ($("sorted").checked) order.sort((a, b) => groups[a] - groups[b] || a - b);
    return order;
  }

  const svg = (d) => `<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true"><path d="${d}" fill="currentColor"/></svg>`;
  const ICON_PLAY = svg("M4 2v12l10-6z"), ICON_PAUSE = svg("M3 2h4v12H3zM9 2h4v12H9z");
  const current = (step) => new Set(step >= 0 ? data.steps[step].positions : []);

  function summary(step) { // app.figures.step_summary, without the timing
    if (step < 0) {
      const given = data.given.filter(Boolean).length;
      return `Before decoding: ${given} given, ${L - given} open`;
    }
    const s = data.steps[step];
    const shown = s.positions.slice(0, 12).join(", ") + (s.positions.length > 12 ? " …" : "");
    return `Step ${step + 1}/${N} · group ${s.group} · committed positions ${shown} · ` +
      `log p = ${s.logprob.toFixed(2)} · model calls ${s.model_calls}`;
  }

  // ---------------------------------------------------------------------------------------- views

  function drawText(step) {
    const tokens = tokensAt(step), now = current(step);
    const box = $("sentence");
    box.textContent = "";
    box.dataset.step = String(step);
    for (let p = 0; p < L; p++) {
      if (p === 0 && data.hide_start) continue;
      const span = document.createElement("span");
      span.dataset.pos = String(p);
      const d = data.decided[p];
      if (data.given[p]) {
        span.className = "tok given";
        span.textContent = display(tokens[p]);
        span.title = `position ${p} · given`;
      } else if (d >= 0 && d <= step) {
        span.className = now.has(p) ? "tok decided current" : "tok decided";
        span.style.background = pal.steps[d];
        span.style.color = pal.ink[d];
        span.textContent = display(tokens[p]);
        span.title = `position ${p} · step ${d}`;
      } else {
        span.className = "tok open";
        span.textContent = "▢";
        span.title = `position ${p} · open`;
      }
      box.appendChild(span);
    }
    const mark = box.querySelector(".current");
    if (mark) mark.scrollIntoView({ block: "nearest" });
  }

  function gridColumns(n) { // app.slides.grid_columns: a readable block, never a thin strip
    return Math.max(1, Math.min(16, n, Math.ceil(Math.sqrt(n * 2))));
  }

  function drawGrid(step) {
    const grid = $("grid"), box = grid.parentElement;
    const cols = gridColumns(L), rows = Math.ceil(L / cols), gap = 3;
    const cell = Math.max(8, Math.floor(Math.min((box.clientWidth - gap * (cols - 1)) / cols,
                                                 (box.clientHeight - gap * (rows - 1)) / rows)));
    grid.style.gridTemplateColumns = `repeat(${cols}, ${cell}px)`;
    grid.style.gridAutoRows = `${cell}px`;
    grid.style.setProperty("--cell-fs", `${Math.max(7, Math.min(Math.round(cell * 0.27), 22))}px`);
    grid.style.setProperty("--cell-h", `${cell}px`);
    const tokens = tokensAt(step), now = current(step);
    grid.textContent = "";
    for (let p = 0; p < L; p++) {
      const div = document.createElement("div");
      const d = data.decided[p];
      div.dataset.pos = String(p);
      if (data.given[p]) {
        div.className = "cell given";
        div.style.background = pal.given;
        div.style.color = "#222222";
        div.textContent = short(display(tokens[p]).trim() || display(tokens[p]));
      } else if (d >= 0 && d <= step) {
        div.className = now.has(p) ? "cell decided current" : "cell decided";
        div.style.background = pal.steps[d];
        div.style.color = pal.ink[d];
        div.textContent = short(display(tokens[p]).trim() || display(tokens[p]));
      } else {
        div.className = "cell open";
        div.style.background = pal.open;
        div.textContent = "?";
      }
      div.title = `position ${p} · group ${data.group_ids[p]}` + (d >= 0 ? ` · step ${d}` : data.given[p] ? " · given" : "");
      if (cell < 20) div.textContent = "";
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

  function drawDag(step) {
    const box = $("dag").parentElement;
    const W = box.clientWidth, H = box.clientHeight;
    const ctx = canvasFor("dag", W, H);
    const names = data.dag.nodes, n = names.length;
    const offset = names[0] === "given" ? 1 : 0;
    const edges = $("reduced").checked ? data.dag.reduced : data.dag.edges;
    const pad = 26, base = H - 26; // room for the "given" label under the first node
    const x = (i) => (n <= 1 ? W / 2 : pad + (i * (W - 2 * pad)) / (n - 1));
    let span = 1;
    for (const [u, v] of edges) span = Math.max(span, v - u);
    const top = Math.max(span / 2, 1.2); // as app.figures.dag_figure: a chain stays low
    const height = (u, v) => ((v - u) / 2 / top) * (base - 12);
    const here = step + offset;
    const groups = [[], [], []]; // past, later, into this step
    for (const e of edges) groups[e[1] === here && step >= 0 ? 2 : e[1] > here ? 1 : 0].push(e);
    const styles = [["rgba(80, 80, 80, 0.45)", 1], ["rgba(150, 150, 150, 0.15)", 1], [pal.highlight, 2.5]];
    groups.forEach((list, k) => {
      ctx.strokeStyle = styles[k][0];
      ctx.lineWidth = styles[k][1];
      ctx.beginPath();
      for (const [u, v] of list) { // a half ellipse from u to v: longer dependencies arch higher
        const cx = (x(u) + x(v)) / 2, rx = (x(v) - x(u)) / 2, ry = Math.max(4, height(u, v));
        ctx.moveTo(x(u), base);
        ctx.ellipse(cx, base, rx, ry, 0, Math.PI, 2 * Math.PI);
      }
      ctx.stroke();
    });
    const r = n <= 60 ? 7 : 4;
    ctx.font = `${Math.round(parseFloat(getComputedStyle(document.body).fontSize) * 0.75)}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    for (let i = 0; i < n; i++) {
      const t = i - offset, later = t > step;
      ctx.beginPath();
      ctx.arc(x(i), base, t === step && step >= 0 ? r * 1.5 : r, 0, 2 * Math.PI);
      ctx.fillStyle = t < 0 ? pal.given : later ? fade(pal.steps[t], 0.25) : pal.steps[t];
      ctx.fill();
      ctx.lineWidth = t === step && step >= 0 ? 3 : 0.7;
      ctx.strokeStyle = t === step && step >= 0 ? pal.highlight : "#555555";
      ctx.stroke();
      if (n <= 40) {
        ctx.fillStyle = later ? "#b0b4ba" : "#444a52";
        ctx.fillText(t < 0 ? "given" : String(t), x(i), base + r + 13);
      }
    }
    $("dag").dataset.edges = String(edges.length);
  }

  function drawMask(id, cells, order, step) {
    const canvas = $(id), box = canvas.parentElement;
    const side = Math.max(40, Math.min(box.clientWidth, box.clientHeight));
    const labelled = L <= 48;
    const tokens = tokensAt(step), now = current(step); // undecided tokens stay "?" in the labels too
    const labels = order.map((p) => (labelled ? `${p}:${short(display(tokens[p] ?? "?").trim() || "·")}` : String(p)));
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
      const i = order[a];
      for (let b = 0; b < L; b++) {
        const j = order[b];
        ctx.fillStyle = cells[i * L + j] ? pal.attend : pal.blocked;
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
    Object.assign(canvas.dataset, { x0, y0, cell, n: L, order: order.join(","), step });
  }

  function drawMasks(step) {
    const groups = groupsAt(step), m = masks(groups), order = displayOrder(groups);
    drawMask("mask-content", m.content, order, step);
    drawMask("mask-query", m.query, order, step);
  }

  function drawLegend() {
    const ramp = pal.steps.length > 1 ? `linear-gradient(90deg, ${pal.steps.join(", ")})` : pal.steps[0] || pal.open;
    $("legend").innerHTML =
      `<span><i class="swatch" style="background:${pal.given}"></i>given</span>` +
      `<span><i class="swatch" style="background:${pal.open};box-shadow:inset 0 0 0 1px #ccc"></i>open</span>` +
      `<span><i class="swatch current"></i>this step</span>` +
      `<span>step 0<i class="ramp" style="background:${ramp}"></i>${Math.max(N - 1, 0)}</span>` +
      `<span><i class="swatch" style="background:${pal.attend}"></i>may attend</span>`;
  }

  function render() {
    const step = state.step;
    $("player").dataset.step = String(step);
    $("summary").textContent = summary(step);
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

  window.addEventListener("keydown", (e) => {
    const action = KEYS[e.key];
    if (!action || e.altKey || e.ctrlKey || e.metaKey || (e.target && e.target.tagName === "SELECT")) return;
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
  window.addEventListener("resize", render);

  $("title").textContent = data.title;
  Object.assign($("slider"), { min: "-1", max: String(N - 1), step: "1" });
  drawLegend();
  $("play").innerHTML = ICON_PLAY;
  render();
  if (window.location.hash === "#play") setPlaying(true);

  window.A3Player = { go, tokensAt, groupsAt, masks, get step() { return state.step; }, steps: N };
})();
