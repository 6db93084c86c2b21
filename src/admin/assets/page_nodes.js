// #/nodes: every gateway node's latest stats, refreshed by the live stream.

import { h, table, fillBody, badge, pageHeader, errorBox, fmtInt, fmtRate, fmtMs, fmtDuration, fmtTime } from './dom.js';

const COLUMNS = [
  { label: 'Node' },
  { label: 'Uptime', class: 'num' },
  { label: 'Conns', class: 'num' },
  { label: 'Socket.IO', class: 'num' },
  { label: 'Subs', class: 'num' },
  { label: 'Pub/s', class: 'num' },
  { label: 'Deliv/s', class: 'num' },
  { label: 'Msg/s', class: 'num' },
  { label: 'p50 / p99', class: 'num' },
  { label: 'Errors/s' },
  { label: 'Slow cuts', class: 'num' },
  { label: 'Broker' },
];

function errorsCell(errors) {
  const entries = Object.entries(errors ?? {}).filter(([, v]) => v > 0);
  if (entries.length === 0) return h('span', { class: 'muted' }, '0');
  return h('ul', { class: 'plain-list' }, entries.map(([code, v]) => h('li', { class: 'nowrap' }, h('code', { class: 'small' }, code), ' ', fmtRate(v))));
}

function brokerCell(broker) {
  if (!broker) return h('span', { class: 'muted' }, '–');
  const rtt = typeof broker.roundTripMs === 'number' ? `RTT ${fmtMs(broker.roundTripMs)}` : null;
  const subs = typeof broker.subscriptions === 'number' ? `${fmtInt(broker.subscriptions)} subs` : null;
  return h('div', { class: 'broker' },
    h('div', null, badge(broker.up ? 'up' : 'down', broker.up ? 'ok' : 'bad'), ' ', broker.kind ?? '?'),
    h('div', { class: 'muted small' }, [rtt, subs].filter(Boolean).join(' · ')));
}

function row(n) {
  return h('tr', { class: n.self ? 'node-row is-self' : 'node-row', 'data-node': n.node, title: `sampled at ${fmtTime(n.at)}` },
    h('td', null, h('code', null, n.node), n.self ? [' ', badge('this node', 'info')] : null),
    h('td', { class: 'num', title: `started ${fmtTime(n.startedAt)}` }, fmtDuration(n.uptimeSeconds)),
    h('td', { class: 'num' }, fmtInt(n.connections)),
    h('td', { class: 'num' }, fmtInt(n.socketioConnections)),
    h('td', { class: 'num' }, fmtInt(n.subscriptions)),
    h('td', { class: 'num' }, fmtRate(n.publishesPerSec)),
    h('td', { class: 'num' }, fmtRate(n.deliveriesPerSec)),
    h('td', { class: 'num' }, fmtRate(n.messagesPerSec)),
    h('td', { class: 'num' }, fmtMs(n.latencyP50Ms), h('br'), h('span', { class: 'muted' }, fmtMs(n.latencyP99Ms))),
    h('td', null, errorsCell(n.errorsPerSec)),
    h('td', { class: 'num' }, fmtInt(n.slowConsumerDisconnects)),
    h('td', { class: 'nowrap' }, brokerCell(n.broker)));
}

export function mount(root, ctx) {
  const error = h('div');
  const wrap = table(COLUMNS, [], 'Loading…', { id: 'nodes-table', class: 'data-table compact' });
  const body = wrap.querySelector('tbody');
  const note = h('p', { class: 'muted' }, 'Rates are per second over each node’s last 1 s sample; “–” latency means no delivery in that second.');
  root.append(pageHeader('Nodes'), error, h('div', { class: 'card' }, wrap), note);

  const show = (nodes) => fillBody(body, COLUMNS, (nodes ?? []).map(row), 'No node has reported stats yet.');
  const latest = ctx.latestStats();
  if (latest) show(latest.nodes);
  else {
    ctx.api.get('nodes', ctx.signal)
      .then((data) => { if (ctx.alive && !ctx.latestStats()) show(data.nodes); })
      .catch((err) => { if (ctx.alive && err.name !== 'AbortError') { show([]); error.replaceChildren(errorBox(err)); } });
  }
  ctx.onStats((data) => { error.replaceChildren(); show(data.nodes); });
}
