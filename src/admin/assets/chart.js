// A small SVG line chart: one line per series over the last MAX_POINTS samples (one a
// second), y axis from 0 auto-scaled to round numbers, an HTML legend with each series'
// latest value. The elements are built once and updated in place, at most once a second.

const NS = 'http://www.w3.org/2000/svg';
export const MAX_POINTS = 120;

// Distinct on white, colour-blind friendlier order first.
const PALETTE = ['#2563eb', '#d97706', '#059669', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#4b5563', '#65a30d', '#b45309'];
const assigned = new Map();

/** The same key (a node id, an error code) gets the same colour in every chart. */
export function colorFor(key) {
  if (!assigned.has(key)) assigned.set(key, PALETTE[assigned.size % PALETTE.length]);
  return assigned.get(key);
}

const W = 640, H = 200;
const M = { left: 50, right: 10, top: 10, bottom: 22 };
const PLOT_W = W - M.left - M.right, PLOT_H = H - M.top - M.bottom;
const MIN_INTERVAL_MS = 1000;

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** 0..top in 3–6 round steps (1, 2, 2.5, 5 × 10^k). */
export function niceScale(max) {
  const m = max > 0 && Number.isFinite(max) ? max : 1;
  const rough = m / 4;
  const pow = 10 ** Math.floor(Math.log10(rough));
  const n = rough / pow;
  const step = (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * pow;
  const count = Math.max(1, Math.ceil(m / step - 1e-9));
  const ticks = [];
  for (let i = 0; i <= count; i++) ticks.push(i * step);
  return { top: count * step, step, ticks };
}

function tickLabel(v, step) {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (v >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  const decimals = Number.isInteger(step) ? 0 : Math.min(3, Math.max(1, Math.ceil(-Math.log10(step)) + 1));
  return String(+v.toFixed(decimals));
}

const defaultFormat = (v) => (Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(2));

/**
 * createChart({ title, format, emptyText, minTop }) → { el, update(series, emptyText?), destroy() }
 * series: [{ key, label, color?, dashed?, values: [number|null] (oldest first, ≤ MAX_POINTS) }]
 * `null` values leave a gap in the line.
 */
export function createChart({ title = '', format = defaultFormat, emptyText = 'No data yet', minTop = 1 } = {}) {
  const root = document.createElement('figure');
  root.className = 'chart';
  if (title) {
    const cap = document.createElement('figcaption');
    cap.className = 'chart-title';
    cap.textContent = title;
    root.appendChild(cap);
  }
  const el = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-label': title });
  const grid = svg('g', { class: 'chart-grid' });
  const lines = svg('g', { class: 'chart-lines', fill: 'none' });
  const empty = svg('text', { x: M.left + PLOT_W / 2, y: M.top + PLOT_H / 2, class: 'chart-empty', 'text-anchor': 'middle' });
  empty.textContent = emptyText;
  const xAxis = svg('g', { class: 'chart-axis' });
  for (const [frac, text, anchor] of [[0, `-${MAX_POINTS} s`, 'start'], [0.5, `-${MAX_POINTS / 2} s`, 'middle'], [1, 'now', 'end']]) {
    const t = svg('text', { x: M.left + PLOT_W * frac, y: H - 6, 'text-anchor': anchor });
    t.textContent = text;
    xAxis.appendChild(t);
  }
  el.append(grid, xAxis, lines, empty);
  const legend = document.createElement('ul');
  legend.className = 'chart-legend';
  root.append(el, legend);

  const paths = new Map();
  const legendValues = new Map();
  let scaleKey = '';
  let legendKey = '';
  let pending = null;
  let pendingEmpty = emptyText;
  let last = -Infinity;
  let timer = 0;

  function drawGrid({ ticks, step, top }) {
    const key = `${top}/${step}`;
    if (key === scaleKey) return;
    scaleKey = key;
    grid.replaceChildren();
    for (const v of ticks) {
      const y = M.top + PLOT_H * (1 - v / top);
      grid.appendChild(svg('line', { x1: M.left, x2: W - M.right, y1: y, y2: y, class: v === 0 ? 'chart-baseline' : 'chart-gridline' }));
      const label = svg('text', { x: M.left - 6, y: y + 4, 'text-anchor': 'end', class: 'chart-axis' });
      label.textContent = tickLabel(v, step);
      grid.appendChild(label);
    }
  }

  function drawLegend(series) {
    const key = series.map((s) => `${s.key}\u0000${s.label}`).join('\u0001');
    if (key !== legendKey) {
      legendKey = key;
      legendValues.clear();
      legend.replaceChildren();
      for (const s of series) {
        const li = document.createElement('li');
        const swatch = svg('svg', { width: 18, height: 10, class: 'chart-swatch', 'aria-hidden': 'true' });
        swatch.appendChild(svg('line', { x1: 1, x2: 17, y1: 5, y2: 5, stroke: s.color ?? colorFor(s.key), 'stroke-width': 3, 'stroke-dasharray': s.dashed ? '4 3' : 'none' }));
        const label = document.createElement('span');
        label.className = 'chart-legend-label';
        label.textContent = s.label ?? s.key;
        const value = document.createElement('span');
        value.className = 'chart-legend-value';
        li.append(swatch, label, value);
        legend.appendChild(li);
        legendValues.set(s.key, value);
      }
    }
    for (const s of series) {
      let latest = null;
      for (let i = s.values.length - 1; i >= 0; i--) {
        if (s.values[i] !== null && s.values[i] !== undefined) { latest = s.values[i]; break; }
      }
      legendValues.get(s.key).textContent = latest === null ? '–' : format(latest);
    }
  }

  function render(series) {
    let max = 0;
    let any = false;
    for (const s of series) {
      for (const v of s.values) {
        if (typeof v === 'number' && Number.isFinite(v)) {
          any = true;
          if (v > max) max = v;
        }
      }
    }
    empty.setAttribute('visibility', any ? 'hidden' : 'visible');
    const scale = niceScale(Math.max(max, minTop));
    drawGrid(scale);
    const dx = PLOT_W / (MAX_POINTS - 1);
    const seen = new Set();
    for (const s of series) {
      seen.add(s.key);
      const values = s.values.length > MAX_POINTS ? s.values.slice(-MAX_POINTS) : s.values;
      const offset = MAX_POINTS - values.length;
      let d = '';
      let pen = false;
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (typeof v !== 'number' || !Number.isFinite(v)) { pen = false; continue; }
        const x = (M.left + (offset + i) * dx).toFixed(1);
        const y = (M.top + PLOT_H * (1 - v / scale.top)).toFixed(1);
        d += pen ? `L${x} ${y}` : `M${x} ${y}h0`;
        pen = true;
      }
      let path = paths.get(s.key);
      if (!path) {
        path = svg('path', { class: 'chart-line', stroke: s.color ?? colorFor(s.key), 'stroke-width': 2, 'stroke-linejoin': 'round', 'stroke-linecap': 'round' });
        if (s.dashed) path.setAttribute('stroke-dasharray', '5 4');
        const tip = svg('title', {});
        tip.textContent = s.label ?? s.key;
        path.appendChild(tip);
        paths.set(s.key, path);
        lines.appendChild(path);
      }
      path.setAttribute('d', d);
    }
    for (const [key, path] of paths) {
      if (!seen.has(key)) { path.remove(); paths.delete(key); }
    }
    drawLegend(series);
  }

  function flush() {
    timer = 0;
    last = performance.now();
    const series = pending;
    pending = null;
    if (series) {
      if (empty.textContent !== pendingEmpty) empty.textContent = pendingEmpty;
      render(series);
    }
  }

  return {
    el: root,
    /** Schedules a redraw with these series; redraws at most once per second. */
    update(series, emptyMessage = emptyText) {
      pending = series;
      pendingEmpty = emptyMessage;
      if (timer) return;
      const wait = MIN_INTERVAL_MS - (performance.now() - last);
      if (wait <= 0) flush();
      else timer = setTimeout(flush, wait);
    },
    destroy() {
      clearTimeout(timer);
      timer = 0;
      pending = null;
      root.remove();
    },
  };
}
