// The packed client (`npm pack`) in headless Chromium: a page watching a job survives a
// gateway restart without losing or repeating an event.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { Gateway, assertComplete, mintToken, sleep, startRedis, until } from "./harness.mjs";

const packageDir = fileURLToPath(new URL("..", import.meta.url));
const pagePath = fileURLToPath(new URL("./browser/page.html", import.meta.url));

function findChromium() {
  for (const name of [process.env.CHROMIUM, "chromium", "chromium-browser", "google-chrome"].filter(Boolean)) {
    if (!spawnSync(name, ["--version"], { stdio: "ignore" }).error) return name;
  }
  throw new Error("Chromium is missing; install it with: apt-get install -y chromium");
}

let work;
let redis;
let nodeA;
let nodeB;
let site;
let browser;
const reports = [];

before(async () => {
  const chromium = findChromium();
  work = mkdtempSync(join(tmpdir(), "sb-js-browser-"));
  // The package exactly as published: `npm pack`, then unpacked.
  const pack = spawnSync("npm", ["pack", "--silent", "--pack-destination", work], { cwd: packageDir, encoding: "utf8" });
  assert.equal(pack.status, 0, `npm pack failed: ${pack.stderr}`);
  const tarball = pack.stdout.trim().split("\n").pop();
  const untar = spawnSync("tar", ["-xzf", join(work, tarball), "-C", work], { encoding: "utf8" });
  assert.equal(untar.status, 0, `tar failed: ${untar.stderr}`);
  const dist = join(work, "package", "dist");

  redis = await startRedis();
  nodeA = await new Gateway({ broker: redis.url }).start();
  nodeB = await new Gateway({ broker: redis.url }).start();

  site = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (req.method === "POST" && url.pathname === "/report") {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        reports.push(JSON.parse(body));
        res.end();
      });
      return;
    }
    if (url.pathname === "/token") {
      res.end(mintToken({ sub: "browser-user", topics: ["job:*"] }));
      return;
    }
    if (url.pathname === "/") {
      res.setHeader("content-type", "text/html");
      res.end(readFileSync(pagePath));
      return;
    }
    if (url.pathname.startsWith("/client/")) {
      const file = normalize(url.pathname.slice("/client/".length));
      if (file.startsWith("..")) {
        res.statusCode = 403;
        res.end();
        return;
      }
      try {
        const body = readFileSync(join(dist, file));
        res.setHeader("content-type", extname(file) === ".js" ? "text/javascript" : "application/octet-stream");
        res.end(body);
      } catch {
        res.statusCode = 404;
        res.end();
      }
      return;
    }
    res.statusCode = 404;
    res.end();
  });
  await new Promise((done) => site.listen(0, "127.0.0.1", done));
  const page = `http://127.0.0.1:${site.address().port}/?topic=job:browser&ws=${encodeURIComponent(nodeA.wsUrl)}`;
  browser = spawn(
    chromium,
    ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
      `--user-data-dir=${join(work, "profile")}`, page],
    { stdio: "ignore" },
  );
});

after(async () => {
  if (browser && browser.exitCode === null && browser.signalCode === null) {
    const exited = new Promise((done) => browser.once("exit", done));
    browser.kill("SIGKILL");
    await exited;
  }
  await nodeA?.stop("SIGKILL");
  await nodeB?.stop("SIGKILL");
  redis?.stop();
  site?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

const of = (kind) => reports.filter((r) => r.kind === kind).map((r) => r.data);

test("a page using the packed client survives a gateway restart without losing an event", async () => {
  await until(() => of("subscribed").length === 1, "the page to subscribe", 30_000);
  const total = 60;
  for (let n = 1; n <= 20; n += 1) await nodeB.publish("job:browser", { type: "progress_update", n });
  await until(() => of("event").length === 20, "the first 20 events in the page");
  await nodeA.stop("SIGTERM");
  for (let n = 21; n <= 40; n += 1) await nodeB.publish("job:browser", { type: "progress_update", n }); // while it is down
  await nodeA.start();
  for (let n = 41; n <= total; n += 1) {
    await nodeB.publish("job:browser", { type: "progress_update", n });
    await sleep(5);
  }
  await until(() => of("event").length >= total, `all ${total} events in the page`, 30_000);
  await sleep(200);
  assertComplete(assert, of("event").map((e) => e.offset), total);
  assert.deepEqual(of("event").map((e) => e.n), Array.from({ length: total }, (_, i) => i + 1));
  assert.deepEqual(of("subscribed").map((s) => s.recovered), [false, true]);
  assert.deepEqual(of("disconnected").map((d) => d.code), [1001]);
  assert.equal(of("connected").length, 2);
  assert.equal(of("resync").length, 0);
});
