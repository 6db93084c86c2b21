// #/topics: search the topics held by connections anywhere in the cluster;
// #/topics/<topic>: one topic's position, retained state, presence, recent history and a
// live tail (the app reopens the stream with ?tail=<topic> while this page is open).

import { h, table, fillBody, pageHeader, card, errorBox, emptyState, debounce, fmtInt, fmtOffset, fmtTime, json, prettyJson } from './dom.js';

const MAX_TAIL = 500;

export function mount(root, ctx, topic) {
  return topic === null ? mountList(root, ctx) : mountTopic(root, ctx, topic);
}

const topicHref = (topic) => `#/topics/${encodeURIComponent(topic)}`;

function mountList(root, ctx) {
  const COLUMNS = [{ label: 'Topic' }, { label: 'Subscribers', class: 'num' }];
  const input = h('input', { type: 'search', id: 'topic-search', placeholder: 'Filter by substring, e.g. job:', autocomplete: 'off', 'aria-label': 'Search topics' });
  const summary = h('p', { class: 'muted result-summary' });
  const error = h('div');
  const wrap = table(COLUMNS, [], 'Loading…', { id: 'topics-table' });
  const body = wrap.querySelector('tbody');
  root.append(
    pageHeader('Topics'),
    h('form', { class: 'toolbar', role: 'search', onsubmit: (e) => { e.preventDefault(); later.cancel(); search(); } },
      input, h('button', { type: 'submit', class: 'btn' }, 'Search')),
    error, h('div', { class: 'card' }, summary, wrap));

  let seq = 0;
  async function search() {
    const q = input.value.trim();
    const mine = ++seq;
    try {
      const data = await ctx.api.get(`topics${ctx.api.query({ search: q, limit: 100 })}`, ctx.signal);
      if (!ctx.alive || mine !== seq) return;
      error.replaceChildren();
      const topics = data.topics ?? [];
      fillBody(body, COLUMNS, topics.map((t) => h('tr', { class: 'topic-row', 'data-topic': t.topic },
        h('td', null, h('a', { href: topicHref(t.topic) }, h('code', null, t.topic))),
        h('td', { class: 'num' }, fmtInt(t.subscribers)))),
      q ? `No topic matches “${q}”.` : 'No topic has a subscriber right now.');
      summary.textContent = topics.length === 0 ? ''
        : topics.length >= 100 ? 'Showing the first 100 topics by subscribers; narrow the search.'
          : `${topics.length} topic${topics.length === 1 ? '' : 's'}${q ? ` matching “${q}”` : ''}, most subscribers first.`;
    } catch (err) {
      if (ctx.alive && err.name !== 'AbortError' && mine === seq) {
        fillBody(body, COLUMNS, [], 'Could not load topics.');
        error.replaceChildren(errorBox(err));
      }
    }
  }
  // Enter searches at once and cancels the pending search (see page_connections.js).
  const later = debounce(search, 250);
  input.addEventListener('input', later);
  ctx.onDispose(later.cancel);
  search();
  input.focus();
}

function presenceUser(u) {
  if (typeof u === 'string') return u;
  if (u && typeof u === 'object') return u.userId ?? u.user ?? json(u);
  return String(u);
}

function eventCells(ev) {
  return [
    h('td', { class: 'num' }, fmtOffset(ev?.offset)),
    h('td', { class: 'nowrap', title: ev?.timestamp ?? '' }, fmtTime(ev?.timestamp)),
    h('td', null, h('code', null, ev?.type ?? '–')),
    h('td', { class: 'json-cell' }, h('code', { class: 'event-json' }, json(ev))),
  ];
}

function mountTopic(root, ctx, topic) {
  const values = {
    subscribers: h('div', { class: 'stat-value', id: 'topic-subscribers' }, '–'),
    offset: h('div', { class: 'stat-value', id: 'topic-offset' }, '–'),
    epoch: h('div', { class: 'stat-value stat-value-small', id: 'topic-epoch' }, '–'),
    present: h('div', { class: 'stat-value', id: 'topic-present' }, '–'),
  };
  const stat = (label, value) => h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label), value);
  const error = h('div');
  const state = h('div', { id: 'topic-state' }, h('p', { class: 'muted' }, 'Loading…'));
  const presence = h('div', { id: 'topic-presence' }, h('p', { class: 'muted' }, 'Loading…'));
  const HISTORY_COLUMNS = [{ label: 'Offset', class: 'num' }, { label: 'Time' }, { label: 'Type' }, { label: 'Event' }];
  const historyWrap = table(HISTORY_COLUMNS, [], 'Loading…', { id: 'topic-history' });
  const historyBody = historyWrap.querySelector('tbody');
  const tailEmpty = h('li', { class: 'tail-empty muted' }, 'Waiting for new events… (each event published to this topic appears here)');
  const tail = h('ol', { id: 'topic-tail', class: 'tail-list' }, tailEmpty);
  const tailCount = h('span', { class: 'muted' }, '');
  let tailed = 0;

  root.append(
    h('p', { class: 'breadcrumb' }, h('a', { href: '#/topics' }, '← Topics')),
    h('div', { class: 'page-header' }, h('h1', null, 'Topic ', h('code', { class: 'topic-name', id: 'topic-name' }, topic))),
    error,
    h('div', { class: 'stats-grid' }, stat('Subscribers', values.subscribers), stat('Offset', values.offset),
      stat('Epoch', values.epoch), stat('Present connections', values.present)),
    h('div', { class: 'two-col' },
      card('Retained state', state),
      card('Presence', presence)),
    card('Live tail',
      h('div', { class: 'toolbar' }, tailCount,
        h('button', { type: 'button', class: 'btn btn-small', id: 'topic-tail-clear', onclick: clearTail }, 'Clear')),
      tail),
    card('Last events', h('p', { class: 'muted' }, 'Up to 20 from the topic’s history, oldest first.'), historyWrap));

  function clearTail() {
    tail.replaceChildren(tailEmpty);
    tailed = 0;
    tailCount.textContent = '';
  }

  ctx.onTail((ev, tailTopic) => {
    if (tailTopic !== topic) return;
    const nearBottom = tail.scrollHeight - tail.scrollTop - tail.clientHeight < 40;
    if (tailEmpty.isConnected) tailEmpty.remove();
    tail.appendChild(h('li', { class: 'tail-event' }, json(ev)));
    while (tail.childElementCount > MAX_TAIL) tail.firstElementChild.remove();
    tailed += 1;
    tailCount.textContent = `${fmtInt(tailed)} event${tailed === 1 ? '' : 's'} since this page opened`;
    if (nearBottom) tail.scrollTop = tail.scrollHeight;
    if (typeof ev?.offset === 'number') values.offset.textContent = fmtOffset(ev.offset);
  });

  ctx.api.get(`topics/${ctx.api.seg(topic)}`, ctx.signal).then((t) => {
    if (!ctx.alive) return;
    values.subscribers.textContent = fmtInt(t.subscribers);
    values.offset.textContent = fmtOffset(t.offset);
    values.epoch.textContent = t.epoch ?? '–';
    values.present.textContent = fmtInt(t.presence?.connections ?? 0);
    state.replaceChildren(t.state === null || t.state === undefined
      ? emptyState('No retained state', 'Publish with “retain” to keep the latest event for new subscribers.')
      : h('pre', { class: 'json-block' }, prettyJson(t.state)));
    const users = t.presence?.users ?? [];
    presence.replaceChildren(users.length === 0
      ? emptyState('No one is present', 'Presence lists the users of connections that joined this topic with presence.')
      : h('ul', { class: 'chips' }, users.map((u) => h('li', { class: 'chip' }, presenceUser(u)))));
    const events = t.history ?? [];
    fillBody(historyBody, HISTORY_COLUMNS, events.map((ev) => h('tr', { class: 'history-event' }, eventCells(ev))),
      'No event in this topic’s history.');
  }).catch((err) => {
    if (!ctx.alive || err.name === 'AbortError') return;
    error.replaceChildren(errorBox(err));
    state.replaceChildren(h('p', { class: 'muted' }, '–'));
    presence.replaceChildren(h('p', { class: 'muted' }, '–'));
    fillBody(historyBody, HISTORY_COLUMNS, [], 'Could not load the history.');
  });
}
