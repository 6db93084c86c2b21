// #/publish: publish one event to a topic (as a backend would), optionally retained.

import { h, pageHeader, describeError, fmtOffset } from './dom.js';

export function mount(root, ctx) {
  const topic = h('input', { type: 'text', id: 'pub-topic', placeholder: 'job:42', autocomplete: 'off', spellcheck: 'false' });
  const event = h('textarea', { id: 'pub-event', rows: 10, spellcheck: 'false', placeholder: '{"type": "job.progress", "data": {"percent": 50}}' });
  const retain = h('input', { type: 'checkbox', id: 'pub-retain' });
  const send = h('button', { type: 'submit', id: 'pub-send', class: 'btn btn-primary' }, 'Publish');
  const result = h('div', { id: 'pub-result', class: 'result', role: 'status', 'aria-live': 'polite' });

  const form = h('form', { class: 'card form-card' },
    h('div', { class: 'field' }, h('label', { for: 'pub-topic' }, 'Topic'), topic),
    h('div', { class: 'field' }, h('label', { for: 'pub-event' }, 'Event (JSON object with a "type")'), event),
    h('div', { class: 'field field-inline' }, retain, h('label', { for: 'pub-retain' }, 'Retain (new subscribers receive it as the topic’s state)')),
    h('div', { class: 'actions' }, send),
    result);
  root.append(pageHeader('Publish', h('p', { class: 'muted' }, 'Sends an event to every subscriber of the topic, on every node.')), form);

  const show = (kind, ...children) => {
    result.className = `result result-${kind}`;
    result.replaceChildren(...children);
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = topic.value.trim();
    if (!name) { show('error', 'Enter a topic.'); topic.focus(); return; }
    let parsed;
    try {
      parsed = JSON.parse(event.value);
    } catch (err) {
      show('error', `Invalid JSON: ${err.message}`);
      event.focus();
      return;
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      show('error', 'The event must be a JSON object, e.g. {"type": "job.progress"}');
      return;
    }
    send.disabled = true;
    show('pending', 'Publishing…');
    try {
      const res = await ctx.api.post('publish', { topic: name, event: parsed, retain: retain.checked }, ctx.signal);
      if (!ctx.alive) return;
      show('ok', 'Published to ', h('a', { href: `#/topics/${encodeURIComponent(res?.topic ?? name)}` }, h('code', null, res?.topic ?? name)),
        ' at offset ', h('strong', { class: 'pub-offset' }, fmtOffset(res?.offset)), retain.checked ? ' (retained)' : '');
    } catch (err) {
      if (!ctx.alive || err.name === 'AbortError') return;
      show('error', describeError(err));
    } finally {
      send.disabled = false;
    }
  });
  topic.focus();
}
