// Never lose an event: gateways killed and restarted mid-stream on a Redis Cluster, a
// slow-consumer cut (4008), an expired token (4001) and refresh before expiry.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { Signalbox } from "../dist/index.js";
import { Gateway, assertComplete, mintToken, sleep, startRedisCluster, tempFile, until } from "./harness.mjs";

const fast = { minDelayMs: 50, maxDelayMs: 500 };

/** Subscribes and records events, notices and disconnects. */
function watch(sb, topic) {
  const seen = { offsets: [], subscribed: [], resyncs: [], disconnects: [], connects: 0 };
  sb.on("connected", () => (seen.connects += 1));
  sb.on("disconnected", (d) => seen.disconnects.push(d.code));
  const sub = sb.subscribe(topic, (event) => seen.offsets.push(event.offset));
  sub.on("subscribed", (s) => seen.subscribed.push(s));
  sub.on("resync", (r) => seen.resyncs.push(r));
  return seen;
}

describe("on a Redis Cluster", () => {
  let cluster;
  let nodeA;
  let nodeB;

  before(async () => {
    cluster = await startRedisCluster(3);
    // History long enough for everything published while a node restarts (a debug build
    // on a loaded machine can take seconds), so a resume can always recover.
    const config = tempFile("signalbox.toml", "[namespaces.job]\nhistory_size = 1000\n");
    const env = { SIGNALBOX_CONFIG: config };
    nodeA = await new Gateway({ broker: cluster.url, env }).start();
    nodeB = await new Gateway({ broker: cluster.url, env }).start();
  });

  after(async () => {
    await nodeA?.stop("SIGKILL");
    await nodeB?.stop("SIGKILL");
    cluster?.stop();
  });

  test("a gateway killed and restarted mid-stream: zero loss, zero duplicates, recovered: true", async (t) => {
    const topic = "job:restart";
    const sb = new Signalbox({ url: nodeA.wsUrl, token: () => mintToken({ topics: ["job:*"] }), WebSocket, reconnect: fast });
    t.after(() => sb.close());
    const seen = watch(sb, topic);
    await until(() => seen.subscribed.length === 1, "the first subscribe");
    const total = 300;
    // The backend publishes through the other node the whole time.
    const publishing = (async () => {
      for (let n = 1; n <= total; n += 1) {
        await nodeB.publish(topic, { type: "progress_update", n });
        await sleep(3);
      }
    })();
    await until(() => seen.offsets.length >= 60, "events before the crash");
    await nodeA.stop("SIGKILL"); // a crash: the client sees the TCP connection drop
    await sleep(300);
    await nodeA.start();
    await until(() => seen.connects === 2 && seen.offsets.length >= 160, "events after the first restart", 30_000);
    await nodeA.stop("SIGTERM"); // a deploy: the client gets 1001
    await sleep(300);
    await nodeA.start();
    await publishing;
    await until(() => seen.offsets.length >= total, () => `all ${total} events: ${JSON.stringify({ ...seen, offsets: seen.offsets.length, last: seen.offsets.at(-1) })}`, 30_000);
    await sleep(200); // a late duplicate would show up here
    assertComplete(assert, seen.offsets, total);
    assert.deepEqual(seen.disconnects, [1006, 1001]);
    assert.deepEqual(seen.subscribed.map((s) => s.recovered), [false, true, true], "every resume recovered");
    assert.equal(seen.resyncs.length, 0);
  });

  test("the automatic user: topic resumes too (its subscription is re-made, not re-confirmed)", async (t) => {
    const topic = "user:carol";
    const sb = new Signalbox({ url: nodeA.wsUrl, token: () => mintToken({ sub: "carol" }), WebSocket, reconnect: fast });
    t.after(() => sb.close());
    const seen = watch(sb, topic);
    await until(() => seen.subscribed.length === 1, "the first subscribe");
    for (let n = 1; n <= 5; n += 1) await nodeB.publish(topic, { type: "notification", n });
    await until(() => seen.offsets.length === 5, "5 notifications");
    await nodeA.stop("SIGTERM");
    for (let n = 6; n <= 10; n += 1) await nodeB.publish(topic, { type: "notification", n });
    await nodeA.start();
    await until(() => seen.subscribed.length === 2, "the resume");
    await nodeB.publish(topic, { type: "notification", n: 11 });
    await until(() => seen.offsets.length >= 11, "the missed and the new notifications");
    await sleep(100);
    assertComplete(assert, seen.offsets, 11);
    assert.equal(seen.subscribed[1].recovered, true);
  });

  test("a topic whose history cannot cover the gap gets resync with its retained state", async (t) => {
    const topic = "lost:1";
    const sb = new Signalbox({ url: nodeA.wsUrl, token: () => mintToken({ topics: ["lost:*"] }), WebSocket, reconnect: fast });
    t.after(() => sb.close());
    const seen = watch(sb, topic);
    await until(() => seen.subscribed.length === 1, "the first subscribe");
    await nodeB.publish(topic, { type: "progress_update", n: 1 });
    await until(() => seen.offsets.length === 1, "the first event");
    await nodeA.stop("SIGTERM");
    // More than history keeps (100 by default): the gap cannot be replayed.
    for (let n = 2; n <= 130; n += 1) await nodeB.publish(topic, { type: "progress_update", n }, n === 120);
    await nodeA.start();
    await until(() => seen.resyncs.length === 1, "the resync");
    assert.equal(seen.subscribed[1].recovered, false);
    assert.equal(seen.resyncs[0].state.n, 120, "the retained state");
    assert.equal(seen.resyncs[0].offset, 130);
    await nodeB.publish(topic, { type: "progress_update", n: 131 });
    await until(() => seen.offsets.length === 2, "the live event after the resync");
    assert.deepEqual(seen.offsets, [1, 131]);
  });
});

/** A `ws` WebSocket class that keeps every socket it opens, so a test can pause one. */
function trackedWebSocket() {
  const sockets = [];
  class Tracked extends WebSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
    }
  }
  return { sockets, Tracked };
}

/** The gateway's count of 4008 closes. */
async function slowConsumerCuts(gateway) {
  const text = await (await fetch(`${gateway.httpUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("signalbox_slow_consumer_disconnects_total"));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("on one gateway", () => {
  let gateway;

  before(async () => {
    // A small send queue, so a paused reader overflows it quickly.
    gateway = await new Gateway({ env: { SIGNALBOX_LIMITS__SEND_QUEUE_BYTES: "65536" } }).start();
  });

  after(() => gateway?.stop());

  test("a slow-consumer cut (4008) reconnects and resumes without loss", async (t) => {
    const { sockets, Tracked } = trackedWebSocket();
    const topic = "job:slow";
    const sb = new Signalbox({ url: gateway.wsUrl, token: () => mintToken({ topics: ["job:*"] }), WebSocket: Tracked, reconnect: fast });
    t.after(() => sb.close());
    const seen = watch(sb, topic);
    await until(() => seen.subscribed.length === 1, "the first subscribe");
    sockets[0].pause(); // the application stops reading: frames pile up in the gateway
    // Publish in batches until the gateway cuts it (its send queue overflowed). The rest
    // of the last batch is missed, and small enough (< 64 KiB) for the resume's replay.
    const blob = "x".repeat(2_000);
    let n = 0;
    while (!(await slowConsumerCuts(gateway))) {
      const events = Array.from({ length: 20 }, () => ({ topic, event: { type: "chunk", n: ++n, blob } }));
      await gateway.api("POST", "/api/publish/batch", { events });
      assert.ok(n < 20_000, "the gateway never cut the paused reader");
    }
    sockets[0].resume();
    await until(() => seen.subscribed.length === 2, "the resume");
    for (let k = 0; k < 5; k += 1) await gateway.publish(topic, { type: "chunk", n: ++n, blob });
    const total = n;
    await until(() => seen.offsets.length >= total, () => `all ${total} events: ${JSON.stringify(seen)}`, 30_000);
    assert.deepEqual(seen.disconnects, [4008]);
    assertComplete(assert, seen.offsets, total);
    assert.deepEqual(seen.subscribed.map((s) => s.recovered), [false, true]);
  });

  test("when every resume overflows the send queue again, topics are subscribed afresh with resync", async (t) => {
    const { sockets, Tracked } = trackedWebSocket();
    const topic = "job:huge";
    const sb = new Signalbox({ url: gateway.wsUrl, token: () => mintToken({ topics: ["job:*"] }), WebSocket: Tracked, reconnect: fast });
    t.after(() => sb.close());
    const errors = [];
    sb.on("error", (e) => errors.push(e.code));
    const seen = watch(sb, topic);
    await until(() => seen.subscribed.length === 1, "the first subscribe");
    const cutsBefore = await slowConsumerCuts(gateway);
    sockets[0].pause();
    const blob = "x".repeat(30_000);
    let n = 0;
    while ((await slowConsumerCuts(gateway)) === cutsBefore) {
      await gateway.publish(topic, { type: "chunk", n: ++n, blob });
      assert.ok(n < 5_000, "the gateway never cut the paused reader");
    }
    // 300 KB missed: more than the 64 KiB send queue, so every resume's replay overflows it.
    for (let k = 0; k < 10; k += 1) await gateway.publish(topic, { type: "chunk", n: ++n, blob }, k === 9);
    sockets[0].resume();
    await until(() => seen.resyncs.length === 1, () => `the resync: ${JSON.stringify({ ...seen, errors })}`, 30_000);
    assert.deepEqual(seen.disconnects, [4008, 4008, 4008]);
    assert.ok(errors.includes("SLOW_CONSUMER"), `errors: ${errors}`);
    assert.equal(seen.resyncs[0].state.n, n, "the retained state");
    await gateway.publish(topic, { type: "chunk", n: n + 1, small: true });
    await until(() => seen.offsets.at(-1) === n + 1, "the live event after the resync");
    const offsets = seen.offsets;
    assert.deepEqual(offsets, [...new Set(offsets)].sort((a, b) => a - b), "no duplicate, in order");
  });

  test("refreshes the token before it expires: the connection never drops", async (t) => {
    let issued = 0;
    const sb = new Signalbox({
      url: gateway.wsUrl,
      token: () => {
        issued += 1;
        return mintToken({ topics: ["job:*"], ttlSec: 2 });
      },
      WebSocket,
      reconnect: fast,
    });
    t.after(() => sb.close());
    const refreshed = [];
    sb.on("refreshed", (r) => refreshed.push(r.expiresAt));
    const seen = watch(sb, "job:refresh");
    await until(() => seen.subscribed.length === 1, "the first subscribe");
    await sleep(4_500);
    await gateway.publish("job:refresh", { type: "x" });
    await until(() => seen.offsets.length === 1, "an event after the refreshes");
    assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times`);
    assert.ok(issued >= 3);
    assert.deepEqual(seen.disconnects, [], "no 4001");
    assert.equal(seen.connects, 1);
  });

  test("4001 with a token provider: a new token, a reconnect and nothing lost", async (t) => {
    let failing = true;
    let calls = 0;
    const sb = new Signalbox({
      url: gateway.wsUrl,
      token: () => {
        calls += 1;
        // The first token is short; the provider then fails (say, the auth service is
        // down) until the gateway has cut the connection.
        if (calls === 1) return mintToken({ topics: ["job:*"], ttlSec: 2 });
        if (failing) throw new Error("auth service unavailable");
        return mintToken({ topics: ["job:*"] });
      },
      WebSocket,
      reconnect: fast,
    });
    t.after(() => sb.close());
    const errors = [];
    sb.on("error", (e) => errors.push(e.code));
    const seen = watch(sb, "job:expiry");
    sb.on("disconnected", (d) => {
      if (d.code === 4001) failing = false;
    });
    await until(() => seen.subscribed.length === 1, "the first subscribe");
    await gateway.publish("job:expiry", { type: "x", n: 1 });
    await until(() => seen.disconnects.includes(4001), "the 4001 close", 10_000);
    await gateway.publish("job:expiry", { type: "x", n: 2 }); // while reconnecting
    await until(() => seen.connects === 2 && seen.offsets.length === 2, "the reconnect with a new token");
    assert.deepEqual(seen.offsets, [1, 2]);
    assert.deepEqual(seen.subscribed.map((s) => s.recovered), [false, true]);
    assert.ok(errors.includes("TOKEN_PROVIDER_ERROR"), `errors: ${errors}`);
  });

  test("a static token that expires (4001) stops reconnecting with AUTHENTICATION_ERROR", async (t) => {
    const sb = new Signalbox({ url: gateway.wsUrl, token: mintToken({ ttlSec: 2 }), WebSocket, reconnect: fast });
    t.after(() => sb.close());
    const disconnected = new Promise((done) => sb.once("disconnected", done));
    const error = new Promise((done) => sb.once("error", done));
    assert.deepEqual(await disconnected, { code: 4001, reason: (await disconnected).reason, willReconnect: false });
    assert.equal((await error).code, "AUTHENTICATION_ERROR");
  });
});
