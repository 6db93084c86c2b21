// The client's pure parts: backoff with full jitter, token expiry and refresh timing.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_RECONNECT, Signalbox, SignalboxError, reconnectDelay } from "../dist/index.js";
import { refreshDelay, tokenExpiresAt } from "../dist/token.js";
import { mintToken } from "./harness.mjs";

test("backoff: uniformly random between the minimum and a ceiling that doubles up to the maximum", () => {
  const options = { minDelayMs: 100, maxDelayMs: 5_000 };
  assert.equal(reconnectDelay(0, options, () => 0), 100);
  assert.equal(reconnectDelay(0, options, () => 1), 200);
  assert.equal(reconnectDelay(3, options, () => 1), 1_600);
  assert.equal(reconnectDelay(50, options, () => 1), 5_000);
  for (let attempt = 0; attempt < 40; attempt += 1) {
    for (let i = 0; i < 50; i += 1) {
      const delay = reconnectDelay(attempt, options);
      assert.ok(delay >= 100 && delay <= 5_000, `attempt ${attempt}: ${delay}`);
    }
  }
  // Jitter: many clients dropped together do not come back together.
  const delays = new Set(Array.from({ length: 100 }, () => reconnectDelay(4, options)));
  assert.ok(delays.size > 50);
  assert.deepEqual(DEFAULT_RECONNECT, { minDelayMs: 250, maxDelayMs: 30_000 });
});

test("token expiry is read from the JWT, and anything else is no expiry", () => {
  const now = Date.now();
  const expiresAt = tokenExpiresAt(mintToken({ ttlSec: 600 }));
  assert.ok(Math.abs(expiresAt - (now + 600_000)) < 2_000);
  for (const token of [undefined, "", "abc", "a.b.c", "a.!!!.c", `x.${btoa('{"exp":"soon"}')}.y`]) {
    assert.equal(tokenExpiresAt(token), undefined, String(token));
  }
});

test("refresh comes a fifth of the lifetime early, between 1 s and 60 s", () => {
  assert.equal(refreshDelay(10_000, 0), 8_000);
  assert.equal(refreshDelay(3_600_000, 0), 3_540_000);
  assert.equal(refreshDelay(2_000, 0), 1_000);
  assert.equal(refreshDelay(500, 0), 0);
});

test("no WebSocket implementation is a clear error", () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    assert.throws(() => new Signalbox({ url: "ws://127.0.0.1:1/ws" }), (err) => err instanceof SignalboxError && /pass \{ WebSocket \}/.test(err.message));
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});
