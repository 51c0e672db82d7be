// Token picker: click a chip to mask / unmask it, drag across chips to set a whole span.
// The selection is painted live in the DOM; on release a *new* value object is assigned to
// props.value (only top-level assignment re-renders and fires .change in Gradio 6).
let anchor = null, cursor = null;
const indexOf = (e) => {
  const chip = e.target.closest('.chip');
  return chip && !chip.classList.contains('locked') ? Number(chip.dataset.i) : null;
};
const paint = () => element.querySelectorAll('.chip').forEach((c) => {
  const i = Number(c.dataset.i);
  const inside = anchor !== null && i >= Math.min(anchor, cursor) && i <= Math.max(anchor, cursor);
  c.classList.toggle('pending', inside);
});
element.addEventListener('pointerdown', (e) => {
  const i = indexOf(e);
  if (i === null) return;
  anchor = cursor = i;
  paint();
  e.preventDefault();
});
element.addEventListener('pointerover', (e) => {
  if (anchor === null) return;
  const i = indexOf(e);
  if (i !== null) { cursor = i; paint(); }
});
window.addEventListener('pointerup', () => {
  if (anchor === null) return;
  const v = props.value || {};
  const lo = Math.min(anchor, cursor), hi = Math.max(anchor, cursor);
  const target = !v.mask[anchor];   // the span takes the opposite of where the drag started
  const locked = new Set(v.locked || []);
  const mask = v.mask.map((m, i) => (i >= lo && i <= hi && !locked.has(i) ? target : m));
  anchor = cursor = null;
  paint();
  props.value = { ...v, mask, edited: (v.edited || 0) + 1 };
});
