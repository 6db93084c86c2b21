#!/usr/bin/env node
// Cluster peer for `signalbox-bench --protocol socketio`: Socket.IO v4 on Node's http
// module with the Redis adapter (`@socket.io/redis-adapter` over node-redis v4), so that
// several of these processes serve one set of rooms, the way a Socket.IO user scales out.
// It speaks exactly what bench/peers/python-socketio/server.py speaks; run two of them on
// one Redis and subscribe on one, publish on the other.
//
//   node server.js [--port N] [--host H]     (PORT / HOST in the environment work too)
//   REDIS_URL=redis://127.0.0.1:6379          (the default)
//
// Prints `listening on <host>:<port>` on stdout once it accepts connections and its Redis
// clients are connected (port 0 picks a free port).
//
// Socket.IO (path /socket.io/, default namespace, no authentication):
//   emit "subscribe" {"topic": T}   -> the client joins room T; the server emits
//                                      "subscribed" {"topic": T, "offset": <last offset>}
//                                      and acks {"status": "success", "topic", "offset"}
//   emit "unsubscribe" {"topic": T} -> leaves room T; ack {"status": "success", "topic"}
// HTTP:
//   POST /api/publish {"topic": T, "event": {...}} -> 200 {"offset": n, "topic": T}
//   and room T, on every process, gets the event "event" with
//   {"topic", "offset", "timestamp", ...event}.
//
// Offsets are per topic across the cluster: `INCR sbpeer:offset:<topic>` in Redis per
// publish (the last offset is `GET` of that key), which is what a user of the adapter does
// to number events consistently across processes. A publish is then `io.to(T).emit(...)`:
// the adapter sends it to the local members of T and PUBLISHes it once on Redis, where
// every other process (pattern-subscribed to the namespace's channel) receives it, decodes
// it and sends it to its own members of T.
//
// Ordering: events of one topic published on one process reach every subscriber in offset
// order (one Redis connection, answers in order). Concurrent publishes of one topic on
// different processes may reach a subscriber out of offset order; the bench publishes each
// topic from one connection to one process, waiting for each answer, so it never does that.
//
// Not implemented (the bench does not use them): tokens, history and resume, retained
// state, filters, client publish, rate limits.

'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

const MAX_BODY = 1 << 20; // 1 MiB publish bodies, as the other peers
const MAX_TOPIC = 256;
const OFFSET_KEY = 'sbpeer:offset:';

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
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

function validTopic(topic) {
  return typeof topic === 'string' && topic.length > 0 && topic.length <= MAX_TOPIC;
}

function topicOf(data) {
  return data !== null && typeof data === 'object' ? data.topic : undefined;
}

function validationError(message) {
  return { status: 'error', code: 'VALIDATION_ERROR', message };
}

function answer(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function httpError(res, status, code, message) {
  answer(res, status, { error: { code, message } });
}

async function main() {
  // The adapter's two connections (README of @socket.io/redis-adapter, "With the redis
  // package"); the publishing connection also runs INCR / GET for the offsets.
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  for (const client of [pubClient, subClient]) {
    // node-redis reconnects by itself; without a listener an error would end the process.
    client.on('error', (err) => console.error(`redis: ${err.message}`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const lastOffset = async (topic) => Number((await pubClient.get(OFFSET_KEY + topic)) ?? 0);
  const nextOffset = (topic) => pubClient.incr(OFFSET_KEY + topic);

  async function publish(body, res) {
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
    let offset;
    try {
      offset = await nextOffset(topic);
    } catch (err) {
      httpError(res, 503, 'BROKER_UNAVAILABLE', `redis: ${err.message}`);
      return;
    }
    const frame = { topic, offset, timestamp: new Date().toISOString() };
    for (const key of Object.keys(event)) {
      if (!(key in frame)) frame[key] = event[key];
    }
    io.to(topic).emit('event', frame);
    answer(res, 200, { offset, topic });
  }

  const server = http.createServer((req, res) => {
    // Socket.IO answers /socket.io/ itself; everything else comes here.
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
      publish(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks), res).catch((err) => {
        if (!res.headersSent) httpError(res, 500, 'INTERNAL', err.message);
      });
    });
    req.on('error', () => {});
  });

  // Socket.IO's defaults otherwise: both transports, pings every 25 s, no compression.
  const io = new Server(server, { serveClient: false, adapter: createAdapter(pubClient, subClient) });

  io.on('connection', (socket) => {
    socket.on('subscribe', async (data, ack) => {
      const reply = typeof ack === 'function' ? ack : () => {};
      const topic = topicOf(data);
      if (!validTopic(topic)) {
        const error = validationError('missing or bad topic');
        socket.emit('error', error);
        reply(error);
        return;
      }
      // Join first, then read the offset: nothing published after the read is missed (an
      // event published in between may arrive with an offset not above the one read).
      socket.join(topic);
      let offset;
      try {
        offset = await lastOffset(topic);
      } catch (err) {
        const error = { status: 'error', code: 'BROKER_UNAVAILABLE', message: `redis: ${err.message}` };
        socket.emit('error', error);
        reply(error);
        return;
      }
      socket.emit('subscribed', { topic, offset });
      reply({ status: 'success', topic, offset });
    });
    socket.on('unsubscribe', (data, ack) => {
      const reply = typeof ack === 'function' ? ack : () => {};
      const topic = topicOf(data);
      if (!validTopic(topic)) {
        reply(validationError('missing or bad topic'));
        return;
      }
      socket.leave(topic);
      reply({ status: 'success', topic });
    });
  });

  let stopping = false;
  function shutdown() {
    if (stopping) return;
    stopping = true;
    io.close(); // disconnects the clients and closes the http server
    Promise.allSettled([pubClient.quit(), subClient.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  }
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);

  server.listen({ host, port }, () => {
    const address = server.address();
    console.log(`listening on ${address.address}:${address.port}`);
  });
}

main().catch((err) => {
  console.error(`socketio-redis peer: ${err.message} (REDIS_URL=${redisUrl})`);
  process.exit(1);
});
