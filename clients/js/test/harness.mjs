// Test harness: real gateways (the signalbox binary), real redis-servers and a Redis
// Cluster, tokens, and the backend HTTP API. Nothing here is mocked.
import { spawn, spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, "../../..");
export const JWT_SECRET = "jsclient-test-secret-0123456789abcdef";
export const API_KEY = "jsclient-test-api-key";

/** The gateway binary: $SIGNALBOX_BIN or the checkout's debug build. */
export function signalboxBin() {
  const path = process.env.SIGNALBOX_BIN ? resolve(REPO, process.env.SIGNALBOX_BIN) : join(REPO, "target/debug/signalbox");
  if (!existsSync(path)) {
    throw new Error(`the signalbox binary is missing at ${path}; build it with \`cargo build --bin signalbox\` or set SIGNALBOX_BIN`);
  }
  return path;
}

/** A free loopback port (bound, then released). */
export async function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** An HS256 client token. */
export function mintToken({ sub = "u1", ttlSec = 3600, topics, role } = {}) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + ttlSec };
  if (topics) claims.topics = topics;
  if (role) claims.role = role;
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const signature = createHmac("sha256", JWT_SECRET).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

/** Resolves once `predicate()` is true; rejects naming `what` (a string, or a function giving one) after `timeoutMs`. */
export async function until(predicate, what, timeoutMs = 15_000) {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === "function" ? what() : what}`);
    }
    await sleep(10);
  }
}

export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

function requireTool(name, install) {
  const probe = spawnSync(name, ["--version"], { stdio: "ignore" });
  if (probe.error) throw new Error(`${name} is missing; install it with: ${install}`);
}

/** One redis-server on a free port, without persistence; `stop()` kills it. */
export async function startRedis() {
  requireTool("redis-server", "apt-get install -y redis-server");
  const port = await freePort();
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  await waitForRedis(port);
  return { url: `redis://127.0.0.1:${port}`, stop: () => proc.kill("SIGKILL") };
}

async function waitForRedis(port) {
  await until(() => spawnSync("redis-cli", ["-p", String(port), "ping"], { encoding: "utf8" }).stdout?.trim() === "PONG", `redis on ${port}`);
}

/** A Redis Cluster of `masters` cluster-mode redis-servers joined with `redis-cli --cluster create`. */
export async function startRedisCluster(masters = 3) {
  requireTool("redis-server", "apt-get install -y redis-server");
  requireTool("redis-cli", "apt-get install -y redis-tools");
  const dir = mkdtempSync(join(tmpdir(), "sb-js-cluster-"));
  const procs = [];
  const ports = [];
  const taken = new Set();
  const distinct = async () => {
    for (;;) {
      const port = await freePort();
      if (!taken.has(port)) {
        taken.add(port);
        return port;
      }
    }
  };
  for (let i = 0; i < masters; i += 1) {
    const port = await distinct();
    const bus = await distinct();
    ports.push(port);
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-port", String(bus),
      "--cluster-config-file", join(dir, `nodes-${port}.conf`), "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no", "--dir", dir];
    procs.push(spawn("redis-server", args, { stdio: "ignore" }));
  }
  for (const port of ports) await waitForRedis(port);
  const create = spawnSync("redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes"], {
    encoding: "utf8",
  });
  if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
  for (const port of ports) {
    await until(() => {
      const info = spawnSync("redis-cli", ["-p", String(port), "cluster", "info"], { encoding: "utf8" }).stdout ?? "";
      return info.includes("cluster_state:ok") && info.includes(`cluster_known_nodes:${masters}`);
    }, `cluster node ${port} to converge`, 20_000);
  }
  return {
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(",")}`,
    stop: () => {
      for (const proc of procs) proc.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One `signalbox serve` process; can be stopped (SIGTERM or SIGKILL) and started again on the same port. */
export class Gateway {
  constructor({ broker, env = {} } = {}) {
    this.broker = broker;
    this.env = env;
    this.proc = null;
    this.addr = null;
    this.stderr = "";
  }

  get wsUrl() {
    return `ws://${this.addr}/ws`;
  }

  get httpUrl() {
    return `http://${this.addr}`;
  }

  async start(listen = this.addr ?? "127.0.0.1:0") {
    const env = { ...process.env };
    delete env.SIGNALBOX_CONFIG;
    delete env.SIGNALBOX_BROKER;
    Object.assign(env, { SIGNALBOX_JWT_SECRET: JWT_SECRET, SIGNALBOX_API_KEYS: API_KEY, SIGNALBOX_LOG: "warn" }, this.env);
    if (this.broker) env.SIGNALBOX_BROKER = this.broker;
    const proc = spawn(signalboxBin(), ["serve", "--listen", listen], { env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    proc.stderr.on("data", (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-4000);
    });
    this.addr = await new Promise((done, fail) => {
      let out = "";
      const timer = setTimeout(() => fail(new Error(`the gateway did not start within 20 s:\n${this.stderr}`)), 20_000);
      proc.stdout.on("data", (chunk) => {
        out += chunk;
        const match = /signalbox listening on (\S+)/.exec(out);
        if (match) {
          clearTimeout(timer);
          done(match[1]);
        }
      });
      proc.once("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`the gateway exited (${code}) before listening:\n${this.stderr}`));
      });
    });
    return this;
  }

  /** Stops the process: SIGTERM (graceful, clients get 1001) or SIGKILL (a crash: clients see the TCP connection drop). */
  async stop(signal = "SIGTERM") {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((done) => proc.once("exit", done));
    proc.kill(signal);
    await exited;
  }

  /** Calls the backend HTTP API; resolves with the parsed JSON body, rejecting on an HTTP error. */
  async api(method, path, body) {
    const response = await fetch(`${this.httpUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  publish(topic, event, retain = false) {
    return this.api("POST", "/api/publish", { topic, event, retain });
  }
}

/** Writes `text` to a temporary file; returns its path. */
export function tempFile(name, text) {
  const dir = mkdtempSync(join(tmpdir(), "sb-js-"));
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Asserts `offsets` is exactly 1..n. */
export function assertComplete(assert, offsets, n) {
  const expected = Array.from({ length: n }, (_, i) => i + 1);
  const missing = expected.filter((o) => !offsets.includes(o));
  const duplicates = offsets.filter((o, i) => offsets.indexOf(o) !== i);
  assert.deepEqual({ missing, duplicates }, { missing: [], duplicates: [] }, "no loss, no duplicates");
  assert.deepEqual(offsets, expected, "in offset order");
}
