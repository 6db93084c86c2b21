// #/sinks: this node's sinks (status coloured) and its disk outbox, refreshed from the
// live stream's stats for this node.

import { h, table, fillBody, badge, pageHeader, errorBox, emptyState, statCard, fmtInt } from './dom.js';

const COLUMNS = [{ label: 'Sink' }, { label: 'Kind' }, { label: 'Status' }, { label: 'Last error' }, { label: 'Outbox', class: 'num' }];
const STATUS_KIND = { up: 'ok', down: 'bad', unknown: 'muted' };

export function mount(root, ctx) {
  const error = h('div');
  const wrap = table(COLUMNS, [], 'Loading…', { id: 'sinks-table' });
  const body = wrap.querySelector('tbody');
  const pending = statCard('Outbox pending', 'outbox-pending', 'events waiting to be delivered to a sink');
  const dead = statCard('Dead letters', 'outbox-dead-letters', 'events given up on after retries');
  const outboxArea = h('div', { class: 'stats-grid' }, pending.el, dead.el);
  const outboxNone = emptyState('No outbox', 'No sink of this node uses the disk outbox.');
  const outboxSlot = h('div', null, outboxArea);
  root.append(pageHeader('Sinks', h('p', { class: 'muted' }, 'Sinks and outbox of this node.')), error, outboxSlot, h('div', { class: 'card' }, wrap));

  function show(sinks, outbox) {
    fillBody(body, COLUMNS, (sinks ?? []).map((s) => h('tr', { class: `sink-row status-${s.status}`, 'data-sink': s.name },
      h('td', null, h('strong', null, s.name)),
      h('td', null, s.kind ?? '–'),
      h('td', null, badge(s.status ?? 'unknown', STATUS_KIND[s.status] ?? 'muted')),
      h('td', { class: s.error ? 'text-bad' : 'muted' }, s.error ?? '–'),
      h('td', { class: 'num' }, fmtInt(s.outbox)))),
    h('span', null, 'No sink is configured: client actions are not forwarded to any backend.'));
    if (outbox) {
      pending.value.textContent = fmtInt(outbox.pending);
      dead.value.textContent = fmtInt(outbox.deadLetters);
      dead.el.classList.toggle('stat-bad', outbox.deadLetters > 0);
      if (!outboxArea.isConnected) outboxSlot.replaceChildren(outboxArea);
    } else if (!outboxNone.isConnected) {
      outboxSlot.replaceChildren(outboxNone);
    }
  }

  ctx.api.get('sinks', ctx.signal)
    .then((data) => { if (ctx.alive) show(data.sinks, data.outbox); })
    .catch((err) => { if (ctx.alive && err.name !== 'AbortError') { fillBody(body, COLUMNS, [], 'Could not load sinks.'); error.replaceChildren(errorBox(err)); } });
  ctx.onStats((data) => {
    const self = data.nodes?.find((n) => n.self);
    if (self && Array.isArray(self.sinks)) { error.replaceChildren(); show(self.sinks, self.outbox); }
  });
}
