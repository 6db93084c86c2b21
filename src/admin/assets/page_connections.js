// #/connections: find connections by user and/or topic anywhere in the cluster; a
// selected connection's details, "send event" and a two-step "Disconnect".

import { h, table, fillBody, pageHeader, badge, errorBox, describeError, debounce, fmtInt, fmtTime, fmtDuration, ageSeconds } from './dom.js';

const LIMIT = 200;
const COLUMNS = [
  { label: 'Connection' }, { label: 'User' }, { label: 'Protocol' }, { label: 'Node' },
  { label: 'Topics' }, { label: 'Connected' }, { label: 'Remote address' },
];

const topicsSummary = (topics) => {
  const list = topics ?? [];
  if (list.length === 0) return h('span', { class: 'muted' }, 'none');
  const shown = list.slice(0, 3).join(', ');
  return h('span', { title: list.join('\n') }, shown, list.length > 3 ? ` +${list.length - 3}` : '');
};

const since = (iso) => {
  const age = ageSeconds(iso);
  return age === null ? fmtTime(iso) : `${fmtDuration(age)} ago`;
};

export function mount(root, ctx) {
  const userInput = h('input', { type: 'search', id: 'conn-user', placeholder: 'User id', autocomplete: 'off', 'aria-label': 'User' });
  const topicInput = h('input', { type: 'search', id: 'conn-topic', placeholder: 'Topic', autocomplete: 'off', 'aria-label': 'Topic' });
  const summary = h('p', { class: 'muted result-summary' });
  const error = h('div');
  const wrap = table(COLUMNS, [], 'Loading…', { id: 'conn-table' });
  const body = wrap.querySelector('tbody');
  const side = h('div', { class: 'conn-side' }, h('div', { class: 'card empty-state' },
    h('p', { class: 'empty-title' }, 'No connection selected'), h('p', { class: 'muted' }, 'Click a row to see its details, send it an event or disconnect it.')));
  root.append(
    pageHeader('Connections'),
    h('form', { class: 'toolbar', role: 'search', onsubmit: (e) => { e.preventDefault(); later.cancel(); search(); } },
      h('label', { class: 'inline-label' }, 'User ', userInput),
      h('label', { class: 'inline-label' }, 'Topic ', topicInput),
      h('button', { type: 'submit', class: 'btn', id: 'conn-search' }, 'Search')),
    error,
    h('div', { class: 'split' }, h('div', { class: 'card' }, summary, wrap), side));

  let selectedId = null;
  let rows = new Map();
  let seq = 0;

  async function search() {
    const filters = { user: userInput.value, topic: topicInput.value };
    const mine = ++seq;
    try {
      const q = ctx.api.query({ user: filters.user.trim(), topic: filters.topic.trim(), limit: LIMIT });
      const data = await ctx.api.get(`connections${q}`, ctx.signal);
      if (!ctx.alive || mine !== seq) return;
      error.replaceChildren();
      const list = data.connections ?? [];
      rows = new Map();
      const trs = list.map((c) => {
        const tr = h('tr', { class: c.connectionId === selectedId ? 'conn-row selected' : 'conn-row', 'data-id': c.connectionId, tabindex: 0 },
          h('td', null, h('code', null, c.connectionId)),
          h('td', null, c.userId ?? h('span', { class: 'muted' }, 'anonymous')),
          h('td', null, badge(c.protocol ?? '?', c.protocol === 'socketio' ? 'info' : 'muted')),
          h('td', null, h('code', null, c.node ?? '–')),
          h('td', null, topicsSummary(c.topics)),
          h('td', { class: 'nowrap', title: fmtTime(c.connectedAt) }, since(c.connectedAt)),
          h('td', null, c.remoteAddr ?? '–'));
        tr.addEventListener('click', () => select(c));
        tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(c); } });
        rows.set(c.connectionId, tr);
        return tr;
      });
      const filtered = filters.user.trim() || filters.topic.trim();
      fillBody(body, COLUMNS, trs, filtered ? 'No connection matches these filters.' : 'No client is connected.');
      summary.textContent = list.length === 0 ? '' : list.length >= LIMIT ? `Showing the first ${LIMIT} connections; narrow the search.`
        : `${fmtInt(list.length)} connection${list.length === 1 ? '' : 's'}.`;
    } catch (err) {
      if (ctx.alive && err.name !== 'AbortError' && mine === seq) {
        fillBody(body, COLUMNS, [], 'Could not load connections.');
        error.replaceChildren(errorBox(err));
      }
    }
  }

  function markSelected() {
    for (const [id, tr] of rows) tr.classList.toggle('selected', id === selectedId);
  }

  function select(conn) {
    selectedId = conn.connectionId;
    markSelected();
    const panel = details(conn);
    side.replaceChildren(panel.el);
    // Below the table on narrow screens: bring the panel into view.
    panel.el.scrollIntoView({ block: 'nearest' });
    // The list may be a few seconds old: fetch the connection as it is now.
    ctx.api.get(`connections/${ctx.api.seg(conn.connectionId)}`, ctx.signal)
      .then((fresh) => { if (ctx.alive && selectedId === conn.connectionId && fresh) panel.refresh(fresh); })
      .catch((err) => {
        if (!ctx.alive || err.name === 'AbortError' || selectedId !== conn.connectionId) return;
        if (err.status === 404) panel.gone('This connection has closed.');
        else panel.notice(describeError(err), 'error');
      });
  }

  function details(conn) {
    const id = conn.connectionId;
    const fields = h('dl', { class: 'details-list' });
    const fill = (c) => {
      const topics = c.topics ?? [];
      fields.replaceChildren(
        h('dt', null, 'Connection'), h('dd', null, h('code', null, c.connectionId)),
        h('dt', null, 'User'), h('dd', null, c.userId ?? h('span', { class: 'muted' }, 'anonymous')),
        h('dt', null, 'Protocol'), h('dd', null, c.protocol ?? '–'),
        h('dt', null, 'Node'), h('dd', null, h('code', null, c.node ?? '–')),
        h('dt', null, 'Remote address'), h('dd', null, c.remoteAddr ?? '–'),
        h('dt', null, 'Connected'), h('dd', null, `${fmtTime(c.connectedAt)} (${since(c.connectedAt)})`),
        h('dt', null, `Topics (${topics.length})`),
        h('dd', null, topics.length ? h('ul', { class: 'chips' }, topics.map((t) => h('li', { class: 'chip' }, h('a', { href: `#/topics/${encodeURIComponent(t)}` }, t))))
          : h('span', { class: 'muted' }, 'none')));
    };
    fill(conn);
    const status = h('p', { class: 'conn-status', id: 'conn-status', role: 'status' });
    const bodyInput = h('textarea', { id: 'conn-send-body', rows: 6, spellcheck: 'false', placeholder: '{"type": "notice", "data": {"text": "hello"}}', 'aria-label': 'Event JSON' });
    const sendResult = h('p', { id: 'conn-send-result', class: 'result', role: 'status' });
    const sendBtn = h('button', { type: 'submit', id: 'conn-send', class: 'btn btn-primary' }, 'Send event');
    const disconnectBtn = h('button', { type: 'button', id: 'conn-disconnect', class: 'btn btn-danger-outline' }, 'Disconnect');
    const confirmBtn = h('button', { type: 'button', id: 'conn-disconnect-confirm', class: 'btn btn-danger', hidden: true }, 'Confirm disconnect');
    const cancelBtn = h('button', { type: 'button', id: 'conn-disconnect-cancel', class: 'btn btn-ghost', hidden: true }, 'Cancel');
    const actionResult = h('p', { id: 'conn-action-result', class: 'result', role: 'status' });

    const showResult = (el, text, kind) => { el.textContent = text; el.className = `result result-${kind}`; };

    const sendForm = h('form', { class: 'send-form' },
      h('label', { for: 'conn-send-body' }, 'Send an event to this connection only'),
      bodyInput, h('div', { class: 'actions' }, sendBtn), sendResult);
    sendForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      let parsed;
      try {
        parsed = JSON.parse(bodyInput.value);
      } catch (err) {
        showResult(sendResult, `Invalid JSON: ${err.message}`, 'error');
        return;
      }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
        showResult(sendResult, 'The event must be a JSON object, e.g. {"type": "notice"}', 'error');
        return;
      }
      // The textarea holds the event; a full request body {"event": {...}} is accepted too.
      const keys = Object.keys(parsed);
      const body = keys.length === 1 && keys[0] === 'event' && parsed.event && typeof parsed.event === 'object' ? parsed : { event: parsed };
      sendBtn.disabled = true;
      try {
        const res = await ctx.api.post(`connections/${ctx.api.seg(id)}/send`, body, ctx.signal);
        if (!ctx.alive) return;
        showResult(sendResult, res?.delivered === false ? 'Not delivered (the connection’s queue is full)' : 'Delivered', res?.delivered === false ? 'error' : 'ok');
      } catch (err) {
        if (!ctx.alive || err.name === 'AbortError') return;
        if (err.status === 404) gone('This connection has closed.');
        showResult(sendResult, describeError(err), 'error');
      } finally {
        sendBtn.disabled = false;
      }
    });

    disconnectBtn.addEventListener('click', () => {
      disconnectBtn.hidden = true;
      confirmBtn.hidden = false;
      cancelBtn.hidden = false;
      confirmBtn.focus();
    });
    cancelBtn.addEventListener('click', () => {
      disconnectBtn.hidden = false;
      confirmBtn.hidden = true;
      cancelBtn.hidden = true;
    });
    confirmBtn.addEventListener('click', async () => {
      confirmBtn.disabled = true;
      try {
        await ctx.api.del(`connections/${ctx.api.seg(id)}`, ctx.signal);
        if (!ctx.alive) return;
        gone('Disconnected (close code 1000).');
        showResult(actionResult, 'Disconnected', 'ok');
      } catch (err) {
        if (!ctx.alive || err.name === 'AbortError') return;
        if (err.status === 404) {
          gone('This connection had already closed.');
          showResult(actionResult, 'Already gone', 'error');
        } else {
          confirmBtn.disabled = false;
          showResult(actionResult, describeError(err), 'error');
        }
      }
    });

    function gone(text) {
      notice(text, 'muted');
      sendBtn.disabled = true;
      bodyInput.disabled = true;
      disconnectBtn.hidden = true;
      confirmBtn.hidden = true;
      cancelBtn.hidden = true;
      const tr = rows.get(id);
      if (tr) tr.classList.add('is-gone');
    }
    function notice(text, kind) { status.textContent = text; status.className = `conn-status alert alert-${kind}`; }

    const el = h('section', { class: 'card conn-details', id: 'conn-details', 'data-id': id, 'aria-label': 'Connection details' },
      h('div', { class: 'card-head' }, h('h2', { class: 'card-title' }, 'Connection details'),
        h('button', { type: 'button', class: 'btn btn-ghost btn-small', 'aria-label': 'Close details', onclick: close }, '×')),
      status, fields, sendForm,
      h('div', { class: 'danger-zone' }, h('div', { class: 'actions' }, disconnectBtn, confirmBtn, cancelBtn), actionResult));
    return { el, refresh: fill, gone, notice };
  }

  function close() {
    selectedId = null;
    markSelected();
    side.replaceChildren(h('div', { class: 'card empty-state' }, h('p', { class: 'empty-title' }, 'No connection selected'),
      h('p', { class: 'muted' }, 'Click a row to see its details, send it an event or disconnect it.')));
  }

  // Typing searches after a pause; Enter searches at once and cancels the pending search,
  // which would otherwise redraw the rows a moment later, under the user's pointer.
  const later = debounce(search, 300);
  userInput.addEventListener('input', later);
  topicInput.addEventListener('input', later);
  ctx.onDispose(later.cancel);
  search();
}
