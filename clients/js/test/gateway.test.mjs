// The client against one real gateway (memory broker): connect, subscribe, events in
// order, retained state, filters, requests and their errors, routed actions, presence,
// and bad input everywhere.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { Signalbox, SignalboxError } from "../dist/index.js";
import { Gateway, mintToken, tempFile, until } from "./harness.mjs";

let gateway;
let webhook;
const hooked = [];

before(async () => {
  // A routed action goes to a real local webhook that answers with a JSON reply.
  webhook = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      if (req.method !== "POST") return res.end(); // the sink's health check (HEAD)
      hooked.push(JSON.parse(body));
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ type: "cancel_ack", ok: true }));
    });
  });
  await new Promise((done) => webhook.listen(0, "127.0.0.1", done));
  const config = tempFile(
    "signalbox.toml",
    `[namespaces.lobby]
subscribe = "authenticated"
client_publish = true
join_leave = true

[sinks.pipeline]
kind = "http"
url = "http://127.0.0.1:${webhook.address().port}/hook"

[[routes]]
action = "cancel_job"
sink = "pipeline"
`,
  );
  gateway = await new Gateway({ env: { SIGNALBOX_CONFIG: config } }).start();
});

after(async () => {
  await gateway?.stop();
  webhook?.close();
});

function client(options = {}) {
  const sb = new Signalbox({
    url: gateway.wsUrl,
    token: mintToken({ sub: options.sub ?? "alice", topics: ["job:*", "deals:*"] }),
    WebSocket,
    ...options.client,
  });
  return sb;
}

const once = (emitter, name) => new Promise((done) => emitter.once(name, done));

describe("one gateway", () => {
  test("connects, subscribes and receives every event once, in order, with the retained state first", async (t) => {
    const sb = client();
    t.after(() => sb.close());
    const connected = await once(sb, "connected");
    assert.match(connected.connectionId, /^conn_\d+_/);
    assert.equal(connected.userId, "alice");
    await gateway.publish("job:j1", { type: "stage_complete", stage: "build" }, true);
    const events = [];
    const sub = sb.subscribe("job:j1", (event) => events.push(event));
    const subscribed = await once(sub, "subscribed");
    assert.equal(subscribed.topic, "job:j1");
    assert.equal(subscribed.offset, 1);
    assert.equal(subscribed.recovered, false);
    assert.match(subscribed.epoch, /^[0-9a-f]{16}$/);
    for (let n = 1; n <= 20; n += 1) await gateway.publish("job:j1", { type: "progress_update", progress: n });
    await until(() => events.length === 21, "the retained state and 20 events");
    assert.equal(events[0].retained, true);
    assert.equal(events[0].stage, "build");
    assert.deepEqual(events.slice(1).map((e) => e.offset), Array.from({ length: 20 }, (_, i) => i + 2));
    assert.deepEqual(events.slice(1).map((e) => e.progress), Array.from({ length: 20 }, (_, i) => i + 1));
    assert.equal(sb.positions().get("job:j1").offset, 21);
  });

  test("a subscribe before the connection is up is sent once it is", async (t) => {
    const sb = client();
    t.after(() => sb.close());
    const events = [];
    const sub = sb.subscribe("job:early", (event) => events.push(event));
    await once(sub, "subscribed");
    await gateway.publish("job:early", { type: "progress_update", progress: 1 });
    await until(() => events.length === 1, "the event");
  });

  test("filters reach the gateway: only matching events arrive", async (t) => {
    const sb = client();
    t.after(() => sb.close());
    const events = [];
    const sub = sb.subscribe("deals:all", (event) => events.push(event), { filters: { discount: { gte: 20 } } });
    await once(sub, "subscribed");
    for (const discount of [5, 25, 10, 40]) await gateway.publish("deals:all", { type: "deal", discount });
    await gateway.publish("deals:all", { type: "deal", discount: 99, last: true });
    await until(() => events.some((e) => e.last), "the last deal");
    assert.deepEqual(events.map((e) => e.discount), [25, 40, 99]);
    assert.throws(() => sb.subscribe("deals:all", () => {}, { filters: { discount: 1 } }), (err) => err.code === "VALIDATION_ERROR");
  });

  test("two subscriptions of one topic share it; the topic is left when the last one ends", async (t) => {
    const sb = client();
    t.after(() => sb.close());
    const a = [];
    const b = [];
    const first = sb.subscribe("job:shared", (e) => a.push(e.offset));
    await once(first, "subscribed");
    const second = sb.subscribe("job:shared", (e) => b.push(e.offset));
    await once(second, "subscribed");
    await gateway.publish("job:shared", { type: "x" });
    await until(() => a.length === 1 && b.length === 1, "both handlers");
    first.unsubscribe();
    await gateway.publish("job:shared", { type: "x" });
    await until(() => b.length === 2, "the remaining handler");
    assert.deepEqual(a, [1]);
    second.unsubscribe();
    const { topics } = await sb.request("subscriptions");
    assert.ok(!topics.includes("job:shared"), `left: ${topics}`);
  });

  test("a second subscribe of a live topic gets the retained state too, then live events", async (t) => {
    const sb = client();
    t.after(() => sb.close());
    await gateway.publish("job:twice", { type: "stage_complete", stage: "test" }, true);
    const first = [];
    const one = sb.subscribe("job:twice", (e) => first.push(e));
    await once(one, "subscribed");
    const second = [];
    const two = sb.subscribe("job:twice", (e) => second.push(e));
    const info = await once(two, "subscribed");
    assert.equal(info.offset, 1);
    await gateway.publish("job:twice", { type: "progress_update", progress: 5 });
    await until(() => first.length === 2 && second.length === 2, "both handlers");
    assert.deepEqual(second.map((e) => [e.offset, e.retained === true]), [[1, true], [2, false]]);
    assert.deepEqual(first.map((e) => [e.offset, e.retained === true]), [[1, true], [2, false]]);
  });

  test("close() while the socket is still connecting neither crashes nor leaves anything running", async () => {
    for (let i = 0; i < 5; i += 1) {
      const sb = client();
      await new Promise((done) => setImmediate(done)); // the socket exists, still CONNECTING
      sb.close();
      assert.equal(sb.isConnected, false);
    }
  });

  test("requests resolve with their reply and reject with the gateway's code", async (t) => {
    const sb = client();
    t.after(() => sb.close());
    assert.deepEqual((await sb.request("ping")).type, "pong");
    await assert.rejects(sb.request("no_such_action", { x: 1 }), (err) => err instanceof SignalboxError && err.code === "UNKNOWN_ACTION");
    await assert.rejects(sb.publish("job:j1", { type: "nope" }), (err) => err.code === "AUTHORIZATION_ERROR");
    await assert.rejects(sb.presence("project:secret"), (err) => err.code === "AUTHORIZATION_ERROR");
    const status = await sb.status("job:j1");
    assert.equal(status.state.stage, "build");
    assert.equal(status.state.retained, undefined);
    // The connection is unaffected by the errors.
    assert.equal((await sb.request("ping")).type, "pong");
  });

  test("a refused subscription ends with an error on the subscription, the rest carries on", async (t) => {
    const sb = client();
    t.after(() => sb.close());
    const sub = sb.subscribe("project:secret", () => assert.fail("no event may arrive"));
    const error = await once(sub, "error");
    assert.equal(error.code, "AUTHORIZATION_ERROR");
    assert.equal(sub.isActive, false);
    assert.ok(!sb.positions().has("project:secret"));
    const events = [];
    const ok = sb.subscribe("job:after-refusal", (e) => events.push(e));
    await once(ok, "subscribed");
    await gateway.publish("job:after-refusal", { type: "x" });
    await until(() => events.length === 1, "the event on the allowed topic");
  });

  test("a routed action is accepted once the sink has it; the webhook's answer arrives as a message", async (t) => {
    const sb = client();
    t.after(() => sb.close());
    const messages = [];
    sb.on("message", (m) => messages.push(m));
    const reply = await sb.request("cancel_job", { job_id: "job_7" });
    assert.equal(reply.type, "accepted");
    assert.match(reply.messageId, /^msg_/);
    await until(() => hooked.length === 1 && messages.length === 1, "the webhook call and its relayed answer");
    assert.deepEqual(JSON.parse(hooked[0].body).data, { job_id: "job_7" });
    assert.deepEqual(messages[0], { type: "cancel_ack", ok: true });
  });

  test("presence, join and leave, and client publishing where the namespace allows it", async (t) => {
    const alice = client();
    const bob = client({ sub: "bob" });
    t.after(() => {
      alice.close();
      bob.close();
    });
    const changes = [];
    const events = [];
    const sub = alice.subscribe("lobby:main", (e) => events.push(e));
    sub.on("join", (c) => changes.push(`join ${c.userId}`));
    sub.on("leave", (c) => changes.push(`leave ${c.userId}`));
    await once(sub, "subscribed");
    const bobSub = bob.subscribe("lobby:main", () => {});
    await once(bobSub, "subscribed");
    await until(() => changes.includes("join bob"), "bob's join");
    const presence = await alice.presence("lobby:main");
    assert.deepEqual(presence.users.sort(), ["alice", "bob"]);
    assert.equal(presence.connections, 2);
    const published = await bob.publish("lobby:main", { type: "chat", text: "hi" });
    assert.equal(published.offset, 1);
    await until(() => events.length === 1, "bob's message");
    assert.equal(events[0].text, "hi");
    bobSub.unsubscribe();
    await until(() => changes.includes("leave bob"), "bob's leave");
  });

  test("a backend's direct send arrives as a message", async (t) => {
    const sb = client();
    t.after(() => sb.close());
    const { connectionId } = await once(sb, "connected");
    const messages = [];
    sb.on("message", (m) => messages.push(m));
    await gateway.api("POST", `/api/connections/${connectionId}/send`, { event: { type: "notice", text: "hello" } });
    await until(() => messages.length === 1, "the direct send");
    assert.equal(messages[0].text, "hello");
  });

  test("bad input gets a clean VALIDATION_ERROR and leaves the client working", async (t) => {
    assert.throws(() => new Signalbox({ url: "not a url", WebSocket }), (err) => err.code === "VALIDATION_ERROR");
    assert.throws(() => new Signalbox({ url: "ftp://x/ws", WebSocket }), (err) => err.code === "VALIDATION_ERROR");
    assert.throws(() => new Signalbox({ url: gateway.wsUrl, WebSocket, token: 42 }), (err) => err.code === "VALIDATION_ERROR");
    assert.throws(() => new Signalbox({ url: gateway.wsUrl, WebSocket, reconnect: { minDelayMs: -1 } }), (err) => err.code === "VALIDATION_ERROR");
    const sb = client();
    t.after(() => sb.close());
    for (const topic of ["", "has space", "x".repeat(257), 7, null, "job:ü"]) {
      assert.throws(() => sb.subscribe(topic, () => {}), (err) => err.code === "VALIDATION_ERROR", `topic ${topic}`);
    }
    assert.throws(() => sb.subscribe("job:x", "not a function"), (err) => err.code === "VALIDATION_ERROR");
    await assert.rejects(sb.request(""), (err) => err.code === "VALIDATION_ERROR");
    await assert.rejects(sb.request("ping", [1, 2]), (err) => err.code === "VALIDATION_ERROR");
    await assert.rejects(sb.publish("job:x", { no: "type" }), (err) => err.code === "VALIDATION_ERROR");
    const circular = {};
    circular.self = circular;
    await assert.rejects(sb.request("cancel_job", circular), (err) => err.code === "VALIDATION_ERROR");
    // An oversized message is the gateway's PAYLOAD_TOO_LARGE; the connection stays.
    await assert.rejects(sb.request("cancel_job", { blob: "x".repeat(70_000) }), (err) => err.code === "PAYLOAD_TOO_LARGE");
    assert.equal((await sb.request("ping")).type, "pong");
  });

  test("requests wait for the connection, and time out cleanly when it never comes", async () => {
    const sb = new Signalbox({ url: "ws://127.0.0.1:9/ws", WebSocket, token: mintToken(), reconnect: { minDelayMs: 50, maxDelayMs: 100 } });
    try {
      const started = Date.now();
      await assert.rejects(sb.request("ping", undefined, { timeoutMs: 300 }), (err) => err.code === "TIMEOUT");
      assert.ok(Date.now() - started < 2_000);
    } finally {
      sb.close();
    }
    await assert.rejects(sb.request("ping"), (err) => err.code === "CLOSED");
  });

  test("a static token that has expired is refused before connecting", async () => {
    const sb = new Signalbox({ url: gateway.wsUrl, WebSocket, token: mintToken({ ttlSec: -10 }), autoConnect: false });
    const error = new Promise((done) => sb.once("error", done));
    sb.connect();
    assert.equal((await error).code, "AUTHENTICATION_ERROR");
    sb.close();
  });
});
