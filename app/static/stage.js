// The stage: draws one trace (props.value: app/stage.py's payload, a trace view) at any step, in the browser.
// Stepping, scrubbing and playing never call the server; when the step settles (not while playing)
// it is reported with trigger('step_settled', {step}) so the detail panels can follow.
// Runs as the js_on_load of app.stage_component.Stage, after stage_core.js (A3Core).
(() => {
  const $ = (sel) => element.querySelector(sel);
  const root = $('.a3s');
  const el = {
    step: $('#stage-step'), counter: $('#stage-counter'), play: $('#play-btn'), speed: $('#stage-speed'),
    headline: $('.a3s-headline'), summary: $('#summary'), sentence: $('#sentence'), grid: $('#stage-grid'),
    dag: $('#stage-dag'), content: $('#stage-content'), query: $('#stage-query'), verdict: $('#verdict'),
    note: $('.a3s-note'), reduce: $('.a3s-reduce'), sort: $('.a3s-sort'), empty: $('.a3s-empty'),
    hover: $('.a3s-mask-hover'),
  };
  const stats = { renders: [], ticks: [] };
  const state = { P: null, step: -1, playing: false, timer: null, loop: false, t0: 0, s0: -1, settle: null };
  window.__a3stage = { state, stats };

  const present = () => document.documentElement.classList.contains('a3-present');
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const n = () => (state.P && !state.P.empty ? state.P.steps.length : 0);
  const interval = () => Math.max(0.05, Number(el.speed.value) || 0.5) * 1000;

  // ------------------------------------------------------------------------------------ drawing
  function drawSentence(P, step) {
    el.sentence.innerHTML = '<div class="sentence" data-step="' + step + '">' + A3Core.sentence(P, step).map((t) => {
      if (t.state === 'given') return '<span class="tok given">' + esc(t.label) + '</span>';
      if (t.state === 'open') return '<span class="tok open" title="position ' + t.p + ' · open">▢</span>';
      return '<span class="tok decided' + (t.current ? ' current' : '') + '" style="background:' + t.color +
        ';color:' + t.ink + '" title="position ' + t.p + ' · step ' + t.decidedAt + '">' + esc(t.label) + '</span>';
    }).join('') + '</div>';
    const cur = el.sentence.querySelector('.tok.current');
    if (cur) {  // keep the current tokens in view inside the text box, never scroll the page
      const box = el.sentence, top = cur.offsetTop - box.offsetTop;
      if (top < box.scrollTop || top > box.scrollTop + box.clientHeight - 24) box.scrollTop = Math.max(0, top - 24);
    }
  }

  function drawGrid(P, step) {
    const cells = A3Core.grid(P, step);
    const cols = P.columns, rows = Math.ceil(cells.length / cols);
    const box = el.grid.parentElement.getBoundingClientRect();
    // cells fill the panel's width; rows stay short enough for the whole block to fit its height
    // (a short text on a big screen gets big cells, not a small block above an empty panel)
    const w = Math.max(14, Math.min(130, Math.floor((box.width - 4) / cols) - 2));
    const h = Math.max(12, Math.min(Math.floor((box.height - 4) / rows) - 2, 68));
    el.grid.style.gridTemplateColumns = 'repeat(' + cols + ', ' + w + 'px)';
    el.grid.style.gridAutoRows = h + 'px';
    el.grid.style.fontSize = Math.max(8, Math.min(present() ? 24 : 18, Math.floor(h * 0.45), Math.floor(w / 4.4))) + 'px';
    el.grid.innerHTML = cells.map((c) => '<div class="cell ' + c.state + (c.current ? ' current' : '') +
      '" data-p="' + c.p + '" style="background:' + c.color + ';color:' + c.ink + '" title="position ' + c.p +
      ' · ' + (c.state === 'open' ? 'open' : esc(P.labels[c.p])) + ' · ' +
      (c.state === 'given' ? 'given' : c.state === 'decided' ? 'decided at step ' + c.decidedAt : 'open') +
      ' · group ' + c.group + '">' + esc(c.text) + '</div>').join('');
  }

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

  function drawDag(P, step) {
    const { ctx, w, h } = sizeCanvas(el.dag);
    const D = A3Core.dag(P, step, el.reduce.checked);
    const count = D.nodes.length;
    let span = 1;
    for (const e of D.edges) span = Math.max(span, e.v - e.u);
    const top = Math.max(span / 2, 1.2);
    const x0 = -0.7, x1 = Math.max(count - 0.3, 0.7), y0 = -0.35 * top, y1 = 1.08 * top;
    const X = (x) => 6 + (x - x0) / (x1 - x0) * (w - 12);
    const Y = (y) => h - 4 - (y - y0) / (y1 - y0) * (h - 8);
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
    const size = count <= 24 ? 8 : count <= 60 ? 6 : 3.5;
    ctx.font = (present() ? 15 : 11) + 'px system-ui, sans-serif'; ctx.textAlign = 'center'; ctx.textBaseline = 'top';
    for (let i = 0; i < count; i++) {
      const t = i - D.offset, isGiven = t < 0;
      ctx.globalAlpha = isGiven || t <= step ? 1 : 0.25;
      ctx.beginPath(); ctx.arc(X(i), Y(0), i === D.current ? size * 1.6 : size, 0, 2 * Math.PI);
      ctx.fillStyle = isGiven ? P.palette.given : P.palette.steps[t]; ctx.fill();
      ctx.lineWidth = i === D.current ? 3 : 0.7;
      ctx.strokeStyle = i === D.current ? P.palette.highlight : '#444'; ctx.stroke();
      ctx.globalAlpha = 1;
      if (count <= 40) {
        ctx.fillStyle = '#333';
        const roomy = (w - 12) / (x1 - x0) > 34;
        ctx.fillText(isGiven ? (roomy ? 'given' : 'g') : String(t), X(i), Y(0) + size * 1.7 + 2);
      }
    }
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

  function render() {
    const P = state.P;
    if (!P || P.empty) return;
    const t = performance.now(), step = state.step, total = n();
    el.step.value = String(step);
    el.counter.textContent = step < 0 ? 'Before decoding · 0/' + total : 'Step ' + (step + 1) + '/' + total;
    el.counter.dataset.step = String(step);
    const caption = A3Core.caption(P, step);
    el.summary.textContent = caption.summary;
    el.verdict.textContent = caption.verdict;
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
    if (!n()) return;
    if (state.step >= n() - 1) setStep(-1);
    state.playing = true; el.play.textContent = '❚❚ pause'; root.classList.add('playing');
    restartClock(); stats.ticks = [performance.now()];
    schedule();
  }

  function pause() {
    state.playing = false; clearTimeout(state.timer); el.play.textContent = '▶ play';
    root.classList.remove('playing');
    settleSoon();
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
      requestAnimationFrame(() => { fit(); render(); });
    } else if (id === 'edit-btn') trigger('edit', {});
  });
  el.step.addEventListener('input', () => userStep(Number(el.step.value)));
  el.speed.addEventListener('change', () => { if (state.playing) restartClock(); });
  el.reduce.addEventListener('change', render);
  el.sort.addEventListener('change', render);

  // the mask under the pointer, in words
  for (const [canvas, name] of [[el.content, 'content'], [el.query, 'query']]) {
    canvas.addEventListener('mousemove', (e) => {
      if (!masksNow) return;
      const side = Number(canvas.dataset.side), ox = Number(canvas.dataset.ox), L = masksNow.L;
      const r = Math.floor((e.offsetY) / side * L), c = Math.floor((e.offsetX - ox) / side * L);
      if (r < 0 || c < 0 || r >= L || c >= L) { el.hover.textContent = ''; return; }
      const i = masksNow.order[r], j = masksNow.order[c], P = state.P;
      const yes = (name === 'content' ? masksNow.content : masksNow.query)[r * L + c];
      el.hover.textContent = name + ': row ' + i + ' “' + P.labels[i] + '” (group ' + masksNow.groups[i] +
        ') ' + (yes ? 'may attend to' : 'is blocked from') + ' column ' + j + ' “' + P.labels[j] + '” (group ' +
        masksNow.groups[j] + ')';
    });
  }

  // ------------------------------------------------------------------------------ size and load
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
    if (!P || P.empty) { el.counter.textContent = 'No trace'; return; }
    el.note.textContent = P.note || '';
    el.headline.textContent = P.headline;
    el.step.min = '-1'; el.step.max = String(n() - 1);
    if (P.speed) el.speed.value = String(P.speed);
    state.loop = !!P.loop;
    state.step = -1;
    fit();
    render();
    if (P.autoplay) setTimeout(() => { if (state.P === P && !state.playing && state.step === -1) play(); }, 400);
  }

  // redraw when any panel changes size (window, presentation mode, fonts); at most once per frame
  let queued = false;
  const resized = new ResizeObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; if (state.P && !state.P.empty) render(); });
  });
  resized.observe(root);
  element.querySelectorAll('.a3s-canvasbox, .a3s-gridbox').forEach((box) => resized.observe(box));
  window.addEventListener('resize', fit);
  // what sits above the stage (the header, a warning) may render after the stage: fit again when it does
  new ResizeObserver(() => fit()).observe(document.body);
  window.__a3stage.play = play; window.__a3stage.pause = pause; window.__a3stage.setStep = (s) => userStep(s);
  watch('value', () => load(props.value));
  load(props.value);
})();
