#!/usr/bin/env node
// Reference peer for `signalbox-bench`: Node's http module plus the `ws` package, speaking
// the subset of Signalbox's native protocol (SPEC §3) and HTTP publish (SPEC §6) that the
// load generator uses. Written the way a Node developer would write a small pub/sub
// gateway: one process, one event loop, no native add-ons.
//
//   node server.js [--port N] [--host H]     (PORT / HOST in the environment work too)
//
// Prints `listening on <host>:<port>` on stdout once it accepts connections (port 0 picks
// a free port).
//
// WebSocket at /ws (query string ignored; no authentication):
//   on open            -> {"type":"connected","connectionId":"conn_<ms>_<rand>"}
//   {"action":"subscribe","topic":T,"requestId":R}
//                      -> {"type":"subscribed","topic":T,"offset":<last offset of T>,"requestId":R}
//   {"action":"unsubscribe","topic":T}  -> {"type":"unsubscribed","topic":T}
//   {"action":"ping"}  -> {"type":"pong"}
//   parameters may also stand inside "data"; errors are {"type":"error","code",...}.
// HTTP:
//   POST /api/publish {"topic":T,"event":{...}} -> 200 {"offset":n,"topic":T}
//   and every subscriber of T gets {"topic":T,"offset":n,"timestamp":"<RFC 3339>",...event}
//   (encoded once per publish, the same bytes sent to each subscriber).
//
// Not implemented (the bench does not use them): tokens, history and resume, retained
// state, filters, client publish, rate limits, slow-consumer eviction.

'use strict';

const http = require('node:http');
const { WebSocketServer } = require('ws');

const MAX_BODY = 1 << 20; // 1 MiB publish bodies
const MAX_MESSAGE = 64 << 10; // 64 KiB client frames
const HEARTBEAT_MS = 25_000; // WebSocket ping interval, as Signalbox's default

function option(name, envName, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i !== -1 && i + 1 < process.argv.length) return process.argv[i + 1];
  const prefixed = process.argv.find((a) => a.startsWith(`--${name}=`));
  if (prefixed) return prefixed.slice(name.length + 3);
  return process.env[envName] ?? fallback;
}

const host = option('host', 'HOST', '127.0.0.1');
const port = Number(option('port', 'PORT', '0'));
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${option('port', 'PORT', '0')}`);
  process.exit(2);
}

/** topic -> Set of sockets subscribed to it */
const subscribers = new Map();
/** topic -> last assigned offset */
const offsets = new Map();
/** socket -> Set of topics it holds */
const held = new WeakMap();

function connectionId() {
  return `conn_${Date.now()}_${Math.random().toString(36).slice(2, 10)}`;
}

function sendJson(ws, value) {
  ws.send(JSON.stringify(value));
}

function error(ws, code, message, requestId) {
  const frame = { type: 'error', code, message };
  if (typeof requestId === 'string') frame.requestId = requestId;
  sendJson(ws, frame);
}

function param(msg, name) {
  if (msg[name] !== undefined) return msg[name];
  if (msg.data !== null && typeof msg.data === 'object') return msg.data[name];
  return undefined;
}

function validTopic(topic) {
  return typeof topic === 'string' && topic.length > 0 && topic.length <= 256;
}

function subscribe(ws, topic) {
  let set = subscribers.get(topic);
  if (set === undefined) {
    set = new Set();
    subscribers.set(topic, set);
  }
  set.add(ws);
  held.get(ws).add(topic);
}

function unsubscribe(ws, topic) {
  const set = subscribers.get(topic);
  if (set !== undefined) {
    set.delete(ws);
    if (set.size === 0) subscribers.delete(topic);
  }
  held.get(ws).delete(topic);
}

function onMessage(ws, data, isBinary) {
  let msg;
  try {
    msg = JSON.parse(isBinary ? data.toString('utf8') : data);
  } catch {
    error(ws, 'VALIDATION_ERROR', 'malformed JSON');
    return;
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    error(ws, 'VALIDATION_ERROR', 'a message is a JSON object');
    return;
  }
  const requestId = typeof msg.requestId === 'string' ? msg.requestId : undefined;
  const withId = (frame) => {
    if (requestId !== undefined) frame.requestId = requestId;
    return frame;
  };
  // The topic of a subscribe/unsubscribe, or undefined after answering VALIDATION_ERROR.
  const topicOf = () => {
    const topic = param(msg, 'topic');
    if (validTopic(topic)) return topic;
    error(ws, 'VALIDATION_ERROR', 'missing or bad topic', requestId);
    return undefined;
  };
  switch (msg.action) {
    case 'subscribe': {
      const topic = topicOf();
      if (topic === undefined) return;
      subscribe(ws, topic);
      sendJson(ws, withId({ type: 'subscribed', topic, offset: offsets.get(topic) ?? 0 }));
      return;
    }
    case 'unsubscribe': {
      const topic = topicOf();
      if (topic === undefined) return;
      unsubscribe(ws, topic);
      sendJson(ws, withId({ type: 'unsubscribed', topic }));
      return;
    }
    case 'ping':
      sendJson(ws, withId({ type: 'pong' }));
      return;
    default:
      error(ws, 'UNKNOWN_ACTION', `unknown action: ${String(msg.action)}`, requestId);
  }
}

const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  clientTracking: true, // for the heartbeat sweep and shutdown
  maxPayload: MAX_MESSAGE,
});

wss.on('connection', (ws) => {
  held.set(ws, new Set());
  ws.isAlive = true;
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  ws.on('message', (data, isBinary) => onMessage(ws, data, isBinary));
  ws.on('error', () => {}); // the close event follows; nothing else to do
  ws.on('close', () => {
    for (const topic of held.get(ws)) {
      const set = subscribers.get(topic);
      if (set !== undefined) {
        set.delete(ws);
        if (set.size === 0) subscribers.delete(topic);
      }
    }
  });
  sendJson(ws, { type: 'connected', connectionId: connectionId() });
});

// The heartbeat from the ws README: ping everyone, drop those that did not answer the last one.
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, HEARTBEAT_MS);

function answer(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function httpError(res, status, code, message) {
  answer(res, status, { error: { code, message } });
}

function publish(body, res) {
  let req;
  try {
    req = JSON.parse(body);
  } catch {
    httpError(res, 400, 'VALIDATION_ERROR', 'malformed JSON');
    return;
  }
  const topic = req?.topic;
  const event = req?.event;
  if (!validTopic(topic)) {
    httpError(res, 400, 'VALIDATION_ERROR', 'missing or bad topic');
    return;
  }
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    httpError(res, 400, 'VALIDATION_ERROR', 'event must be an object');
    return;
  }
  const offset = (offsets.get(topic) ?? 0) + 1;
  offsets.set(topic, offset);
  const set = subscribers.get(topic);
  if (set !== undefined && set.size > 0) {
    const frame = { topic, offset, timestamp: new Date().toISOString() };
    for (const key of Object.keys(event)) {
      if (!(key in frame)) frame[key] = event[key];
    }
    // Encoded once; every subscriber is sent the same bytes as a text frame.
    const data = Buffer.from(JSON.stringify(frame));
    for (const ws of set) {
      if (ws.readyState === 1) ws.send(data, { binary: false });
    }
  }
  answer(res, 200, { offset, topic });
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  if (path !== '/api/publish') {
    httpError(res, 404, 'NOT_FOUND', 'no such route');
    return;
  }
  if (req.method !== 'POST') {
    res.setHeader('allow', 'POST');
    httpError(res, 405, 'METHOD_NOT_ALLOWED', 'use POST');
    return;
  }
  const chunks = [];
  let size = 0;
  let tooLarge = false;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      tooLarge = true;
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (tooLarge) {
      httpError(res, 413, 'PAYLOAD_TOO_LARGE', `body over ${MAX_BODY} bytes`);
      return;
    }
    publish(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks), res);
  });
  req.on('error', () => {});
});

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  const path = req.url.split('?', 1)[0];
  if (path !== '/ws') {
    socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
});

function shutdown() {
  clearInterval(heartbeat);
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  server.close();
  // Give close frames a moment, then leave.
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen({ host, port }, () => {
  const address = server.address();
  console.log(`listening on ${address.address}:${address.port}`);
});
