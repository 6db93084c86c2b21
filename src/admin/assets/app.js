// The dashboard's shell: a hash router over the pages, the one live stream
// (/admin/api/stream, reopened with ?tail=<topic> while a topic page is open), the header
// (node id, stream status) and the last 120 s of stats that the overview charts draw.

import * as api from './api.js';
import { MAX_POINTS } from './chart.js';
import { h, errorBox } from './dom.js';
import * as overview from './page_overview.js';
import * as nodes from './page_nodes.js';
import * as topics from './page_topics.js';
import * as connections from './page_connections.js';
import * as sinks from './page_sinks.js';
import * as publish from './page_publish.js';

// `tail` names the topic whose events the stream follows while the page is open.
const ROUTES = {
  overview: { page: overview },
  nodes: { page: nodes },
  topics: { page: topics, tail: (arg) => arg },
  connections: { page: connections },
  sinks: { page: sinks },
  publish: { page: publish },
};
const DEFAULT_ROUTE = 'overview';

const view = document.getElementById('view');
const statusEl = document.getElementById('stream-status');
const nodeIdEl = document.getElementById('node-id');
const clusterEl = document.getElementById('cluster-mode');

// ---- stats kept across pages ----------------------------------------------------------

/** The last MAX_POINTS stats messages: [{ nodes: Map(nodeId → NodeStats), totals }]. */
const statsHistory = [];
let latestStats = null;
const statsListeners = new Set();
const tailListeners = new Set();

function onStats(data) {
  if (!data || !Array.isArray(data.nodes)) return;
  latestStats = data;
  statsHistory.push({ nodes: new Map(data.nodes.map((n) => [n.node, n])), totals: data.totals ?? {} });
  if (statsHistory.length > MAX_POINTS) statsHistory.splice(0, statsHistory.length - MAX_POINTS);
  const self = data.nodes.find((n) => n.self);
  if (self) nodeIdEl.textContent = self.node;
  for (const fn of statsListeners) fn(data);
}

// ---- the live stream ------------------------------------------------------------------

const STALL_MS = 20000; // stats come every second, a comment every 15 s
let source = null;
let sourceUrl = '';
let wantedTail = null;
let retryTimer = 0;
let stallTimer = 0;

function setStatus(state) {
  statusEl.textContent = state;
  statusEl.className = `stream-status is-${state}`;
}

function streamUrl(tail) {
  return tail === null ? '/admin/api/stream' : `/admin/api/stream?tail=${encodeURIComponent(tail)}`;
}

function armStallTimer() {
  clearTimeout(stallTimer);
  stallTimer = setTimeout(() => openStream(true), STALL_MS);
}

/** Opens the stream for the wanted tail; keeps the open one if it already matches. */
function openStream(force = false) {
  const url = streamUrl(wantedTail);
  if (!force && source && url === sourceUrl && source.readyState !== EventSource.CLOSED) return;
  clearTimeout(retryTimer);
  if (source) source.close();
  sourceUrl = url;
  setStatus('connecting');
  const es = new EventSource(url);
  source = es;
  armStallTimer();
  es.addEventListener('open', () => {
    if (es !== source) return;
    setStatus('live');
    armStallTimer();
  });
  es.addEventListener('error', () => {
    if (es !== source) return;
    setStatus('disconnected');
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (a 401, or not an event stream): check the session (a 401
      // leads to the login page), then try again.
      api.get('nodes').catch(() => {});
      retryTimer = setTimeout(() => openStream(true), 3000);
    }
  });
  es.addEventListener('stats', (e) => {
    if (es !== source) return;
    armStallTimer();
    if (statusEl.textContent !== 'live') setStatus('live');
    try {
      onStats(JSON.parse(e.data));
    } catch (err) {
      console.warn('stats message is not JSON', err);
    }
  });
  es.addEventListener('event', (e) => {
    if (es !== source || wantedTail === null) return;
    armStallTimer();
    let event;
    try {
      event = JSON.parse(e.data);
    } catch (err) {
      console.warn('tail event is not JSON', err);
      return;
    }
    for (const fn of tailListeners) fn(event, wantedTail);
  });
}

function setTail(topic) {
  wantedTail = topic;
  openStream();
}

// ---- router ---------------------------------------------------------------------------

let unmountCurrent = null;

/** `#/topics/job%3A42` → { name: 'topics', arg: 'job:42' } */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const slash = raw.indexOf('/');
  const name = slash === -1 ? raw : raw.slice(0, slash);
  let arg = slash === -1 ? null : raw.slice(slash + 1);
  if (arg !== null) {
    try {
      arg = decodeURIComponent(arg);
    } catch {
      // a hand-typed malformed escape: take it literally
    }
    if (arg === '') arg = null;
  }
  return { name, arg };
}

/** Everything a page may use; its subscriptions and fetches end when it is left. */
function pageContext() {
  const disposers = [];
  const controller = new AbortController();
  disposers.push(() => controller.abort());
  return {
    api,
    signal: controller.signal,
    get alive() { return !controller.signal.aborted; },
    history: statsHistory,
    latestStats: () => latestStats,
    nodeId: () => nodeIdEl.textContent,
    onStats(fn) {
      statsListeners.add(fn);
      disposers.push(() => statsListeners.delete(fn));
    },
    onTail(fn) {
      tailListeners.add(fn);
      disposers.push(() => tailListeners.delete(fn));
    },
    onDispose(fn) { disposers.push(fn); },
    dispose() { for (const fn of disposers.splice(0)) { try { fn(); } catch (err) { console.error(err); } } },
  };
}

function route() {
  const { name, arg } = parseHash();
  const entry = ROUTES[name];
  if (!entry) {
    location.replace(`#/${DEFAULT_ROUTE}`);
    return;
  }
  if (unmountCurrent) unmountCurrent();
  for (const link of document.querySelectorAll('.nav a[data-route]')) {
    const active = link.dataset.route === name;
    link.classList.toggle('active', active);
    if (active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  setTail(entry.tail ? (entry.tail(arg) ?? null) : null);
  const ctx = pageContext();
  unmountCurrent = () => ctx.dispose();
  const root = h('div', { class: `page page-${name}` });
  view.replaceChildren(root);
  try {
    const cleanup = entry.page.mount(root, ctx, arg);
    if (typeof cleanup === 'function') ctx.onDispose(cleanup);
  } catch (err) {
    console.error(err);
    root.replaceChildren(errorBox(err));
  }
}

// ---- start ----------------------------------------------------------------------------

async function loadIdentity() {
  try {
    const data = await api.get('overview');
    if (data?.node && nodeIdEl.textContent === '…') nodeIdEl.textContent = data.node;
    if (data && typeof data.cluster === 'boolean') {
      clusterEl.textContent = data.cluster ? 'cluster' : 'single node';
      clusterEl.hidden = false;
    }
  } catch (err) {
    if (err.status !== 401) console.warn('overview', err);
  }
}

window.addEventListener('hashchange', route);
if (!location.hash) window.history.replaceState(null, '', `#/${DEFAULT_ROUTE}`);
loadIdentity();
route();
