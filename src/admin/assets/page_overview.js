// #/overview: cluster totals and live charts of the last 120 s, one line per node.

import { createChart, colorFor } from './chart.js';
import { h, pageHeader, statCard, fmtInt, fmtRate, fmtMs, errorBox } from './dom.js';

const nodeLabel = (stats) => (stats.self ? `${stats.node} (this node)` : stats.node);

/** Node ids in order of first appearance in the window, this node first. */
function nodeIds(history) {
  const ids = [];
  let self = null;
  for (const tick of history) {
    for (const [id, stats] of tick.nodes) {
      if (stats.self) self = id;
      if (!ids.includes(id)) ids.push(id);
    }
  }
  if (self) ids.sort((a, b) => (a === self ? -1 : b === self ? 1 : 0));
  return ids;
}

function labelOf(history, id) {
  for (let i = history.length - 1; i >= 0; i--) {
    const stats = history[i].nodes.get(id);
    if (stats) return nodeLabel(stats);
  }
  return id;
}

/** One series per node of `pick(stats)`; a tick without the node leaves a gap. */
function perNode(history, pick, suffix = '', dashed = false) {
  return nodeIds(history).map((id) => ({
    key: `${id}${suffix}`,
    label: `${labelOf(history, id)}${suffix}`,
    color: colorFor(id),
    dashed,
    values: history.map((tick) => {
      const stats = tick.nodes.get(id);
      const v = stats ? pick(stats) : null;
      return typeof v === 'number' ? v : null;
    }),
  }));
}

/** Errors/s by code, summed over the nodes (a code missing from a tick counted 0). */
function errorSeries(history) {
  const codes = [];
  for (const tick of history) {
    for (const stats of tick.nodes.values()) {
      for (const code of Object.keys(stats.errorsPerSec ?? {})) if (!codes.includes(code)) codes.push(code);
    }
  }
  codes.sort();
  return codes.map((code) => ({
    key: `error:${code}`,
    label: code,
    color: colorFor(`error:${code}`),
    values: history.map((tick) => {
      let sum = 0;
      for (const stats of tick.nodes.values()) sum += stats.errorsPerSec?.[code] ?? 0;
      return sum;
    }),
  }));
}

export function mount(root, ctx) {
  const cards = {
    connections: statCard('Connections', 'total-connections'),
    nodes: statCard('Nodes', 'total-nodes'),
    publishes: statCard('Publishes / s', 'total-publishes'),
    deliveries: statCard('Deliveries / s', 'total-deliveries'),
  };
  const charts = [
    { chart: createChart({ title: 'Connections', format: fmtInt, emptyText: 'No data yet' }),
      series: (hist) => perNode(hist, (s) => s.connections) },
    { chart: createChart({ title: 'Deliveries / s', format: fmtRate, emptyText: 'No data yet' }),
      series: (hist) => perNode(hist, (s) => s.deliveriesPerSec) },
    { chart: createChart({ title: 'Publishes / s', format: fmtRate, emptyText: 'No data yet' }),
      series: (hist) => perNode(hist, (s) => s.publishesPerSec) },
    { chart: createChart({ title: 'Delivery latency p50 / p99 (ms)', format: fmtMs, emptyText: 'No deliveries in the last 2 minutes', minTop: 0.1 }),
      series: (hist) => {
        const p50 = perNode(hist, (s) => s.latencyP50Ms, ' p50');
        const p99 = perNode(hist, (s) => s.latencyP99Ms, ' p99', true);
        return p50.flatMap((s, i) => [s, p99[i]]);
      } },
    { chart: createChart({ title: 'Errors / s by code (all nodes)', format: fmtRate, emptyText: 'No errors in the last 2 minutes' }),
      series: errorSeries },
  ];
  const error = h('div');

  root.append(
    pageHeader('Overview', h('p', { class: 'muted' }, 'Live, every second, over the last 2 minutes.')),
    error,
    h('div', { class: 'stats-grid' }, Object.values(cards).map((c) => c.el)),
    h('div', { class: 'charts-grid' }, charts.map((c) => h('div', { class: 'card chart-card' }, c.chart.el))),
  );

  function showTotals(totals, nodes) {
    if (!totals) return;
    cards.connections.value.textContent = fmtInt(totals.connections);
    cards.connections.sub.textContent = `${fmtInt(totals.socketioConnections)} Socket.IO · ${fmtInt(totals.subscriptions)} subscriptions`;
    cards.nodes.value.textContent = fmtInt(totals.nodes ?? nodes?.length);
    const down = (nodes ?? []).filter((n) => n.broker && n.broker.up === false).length;
    cards.nodes.sub.textContent = down ? `${down} with the broker down` : nodes?.length ? 'all brokers up' : '';
    cards.nodes.sub.classList.toggle('text-bad', down > 0);
    cards.publishes.value.textContent = fmtRate(totals.publishesPerSec);
    cards.deliveries.value.textContent = fmtRate(totals.deliveriesPerSec);
  }

  const WAITING = 'Waiting for live stats…';
  const drawCharts = () => {
    for (const c of charts) c.chart.update(c.series(ctx.history), ctx.history.length ? undefined : WAITING);
  };

  const latest = ctx.latestStats();
  if (latest) showTotals(latest.totals, latest.nodes);
  else {
    ctx.api.get('overview', ctx.signal)
      .then((data) => { if (ctx.alive && !ctx.latestStats()) showTotals(data.totals, data.nodes); })
      .catch((err) => { if (ctx.alive && err.name !== 'AbortError') error.replaceChildren(errorBox(err)); });
  }
  drawCharts();
  ctx.onStats((data) => {
    error.replaceChildren();
    showTotals(data.totals, data.nodes);
    drawCharts();
  });
  return () => { for (const c of charts) c.chart.destroy(); };
}
