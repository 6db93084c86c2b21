// Building DOM without innerHTML: every piece of server or user data becomes a text node
// (or an attribute value), so nothing a client publishes can inject markup or script.

/**
 * h('td', { class: 'num', 'data-id': id, onclick: fn }, 'text', childNode, [more])
 * Strings and numbers become text nodes; null, undefined and false are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on') && typeof value === 'function') {
        el.addEventListener(name.slice(2), value);
      } else if (name === 'class') {
        el.className = value;
      } else if (name === 'hidden' || name === 'disabled' || name === 'checked' || name === 'value') {
        el[name] = value;
      } else {
        el.setAttribute(name, value === true ? '' : String(value));
      }
    }
  }
  append(el, children);
  return el;
}

/** Appends children (nested arrays allowed) as nodes or text. */
export function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
  return el;
}

/**
 * A table: columns are { label, class? }; rows are arrays of cells (text or nodes), or
 * ready <tr> elements. With no rows, one full-width row says `empty`.
 */
export function table(columns, rows, empty, attrs = {}) {
  const body = h('tbody');
  fillBody(body, columns, rows, empty);
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'data-table', ...attrs },
      h('thead', null, h('tr', null, columns.map((c) => h('th', { class: c.class, scope: 'col' }, c.label)))),
      body));
}

/** Replaces a tbody's rows (see table()). */
export function fillBody(body, columns, rows, empty) {
  const trs = rows.map((row) => (row instanceof Node ? row
    : h('tr', null, row.map((cell, i) => h('td', { class: columns[i]?.class }, cell)))));
  if (trs.length === 0) trs.push(h('tr', { class: 'empty-row' }, h('td', { colspan: columns.length }, empty)));
  body.replaceChildren(...trs);
}

export const badge = (text, kind = 'muted') => h('span', { class: `badge badge-${kind}` }, text);

export const emptyState = (title, detail) =>
  h('div', { class: 'empty-state' }, h('p', { class: 'empty-title' }, title), detail && h('p', { class: 'muted' }, detail));

export const errorBox = (err) => h('p', { class: 'alert alert-error', role: 'alert' }, describeError(err));

export const describeError = (err) => (err && err.code ? `${err.code}: ${err.message}` : String(err?.message ?? err));

export const card = (title, ...children) =>
  h('section', { class: 'card' }, title && h('h2', { class: 'card-title' }, title), children);

export const pageHeader = (title, ...extra) => h('div', { class: 'page-header' }, h('h1', null, title), extra);

/** A stat card whose value element has the given id (the browser tests read those ids). */
export function statCard(label, id, sub) {
  const value = h('div', { class: 'stat-value', id }, '–');
  const subEl = h('div', { class: 'stat-sub muted' }, sub ?? '');
  return { el: h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label), value, subEl), value, sub: subEl };
}

// ---- formatting ---------------------------------------------------------------------

const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const rateFmt = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

export const fmtInt = (n) => (typeof n === 'number' && Number.isFinite(n) ? intFmt.format(n) : '–');
/** Offsets stay plain digits (they are identifiers more than quantities). */
export const fmtOffset = (n) => (typeof n === 'number' && Number.isFinite(n) ? String(n) : '–');
export const fmtRate = (n) => (typeof n === 'number' && Number.isFinite(n) ? rateFmt.format(n) : '–');

export function fmtMs(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  return n < 10 ? `${n.toFixed(2)} ms` : n < 100 ? `${n.toFixed(1)} ms` : `${Math.round(n)} ms`;
}

export function fmtDuration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${hr}h`;
  if (hr > 0) return `${hr}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** "04:02:03" for today's timestamps, with the date otherwise; the raw value if unparsable. */
export function fmtTime(iso) {
  if (iso === null || iso === undefined || iso === '') return '–';
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso);
  const sameDay = t.toDateString() === new Date().toDateString();
  return sameDay ? t.toLocaleTimeString() : t.toLocaleString();
}

/** Seconds since an ISO timestamp (null if unparsable). */
export function ageSeconds(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : Math.max(0, (Date.now() - t) / 1000);
}

export const json = (value) => JSON.stringify(value);
export const prettyJson = (value) => JSON.stringify(value, null, 2);

/** Calls fn after `ms` without another call (search boxes). */
export function debounce(fn, ms) {
  let timer = 0;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}
