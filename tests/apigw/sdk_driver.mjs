#!/usr/bin/env node
// The AWS JS SDK v3 `ApiGatewayManagementApiClient` against Signalbox's `/@connections`
// API, run by tests/it/apigw.rs: the calls a Node backend makes, unchanged but for
// `endpoint`.
//
// One call:
//   node sdk_driver.mjs --endpoint URL --key AKID --secret S OP CONNECTION_ID [--data TEXT | --data-hex HEX]
// Many calls, one process (JSON lines on the file or `-` for stdin; each answer is printed
// before the next line is read, so a caller may interleave):
//   node sdk_driver.mjs --endpoint URL --key AKID --secret S --ops-file -
//   {"op": "post", "id": "conn_…", "data": "text"}     (or "data_hex": "ff00")
//   {"op": "get", "id": "conn_…", "endpoint": "http://…/prod", "secret": "other"}
//   {"op": "post", "id": "conn_…", "clock_offset_ms": -1200000}   (a clock 20 min behind)
//   {"op": "flood", "id": "conn_…", "size": 65536, "count": 400}
//
// Prints one JSON line per op: {"ok": true, "result": {...}} or
// {"ok": false, "error": {"code": err.name, "status": err.$metadata.httpStatusCode, "message"}};
// `flood` posts `size` bytes up to `count` times, stopping at the first error:
// {"ok": …, "posted": N, "error"?: …}. Exit status 0 either way.

import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
  GetConnectionCommand,
  DeleteConnectionCommand,
} from "@aws-sdk/client-apigatewaymanagementapi";

process.env.AWS_EC2_METADATA_DISABLED = "true";

function parseArgs(argv) {
  const opts = { region: "us-east-1", positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--endpoint") opts.endpoint = value();
    else if (a === "--key") opts.key = value();
    else if (a === "--secret") opts.secret = value();
    else if (a === "--region") opts.region = value();
    else if (a === "--ops-file") opts.opsFile = value();
    else if (a === "--data") opts.data = value();
    else if (a === "--data-hex") opts.dataHex = value();
    else opts.positional.push(a);
  }
  for (const required of ["endpoint", "key", "secret"]) {
    if (!opts[required]) throw new Error(`--${required} is required`);
  }
  return opts;
}

const clients = new Map();

// The client exactly as a backend creates it, with retries off so that a 429 or 503 is
// seen once.
function client(endpoint, key, secret, region, clockOffset) {
  const cacheKey = JSON.stringify([endpoint, key, secret, region, clockOffset]);
  if (!clients.has(cacheKey)) {
    clients.set(
      cacheKey,
      new ApiGatewayManagementApiClient({
        endpoint,
        region,
        credentials: { accessKeyId: key, secretAccessKey: secret },
        maxAttempts: 1,
        ...(clockOffset ? { systemClockOffset: clockOffset } : {}),
      }),
    );
  }
  return clients.get(cacheKey);
}

function bodyOf(op) {
  if (op.data_hex != null) return Buffer.from(op.data_hex, "hex");
  if (op.data != null) return Buffer.from(op.data, "utf8");
  return Buffer.alloc(0);
}

function errorOf(err) {
  return {
    code: err?.name ?? String(err),
    status: err?.$metadata?.httpStatusCode ?? null,
    message: err?.message ?? String(err),
  };
}

const iso = (d) => (d instanceof Date ? d.toISOString() : (d ?? null));

async function run(op, defaults) {
  const c = client(
    op.endpoint ?? defaults.endpoint,
    op.key ?? defaults.key,
    op.secret ?? defaults.secret,
    op.region ?? defaults.region,
    op.clock_offset_ms ?? 0,
  );
  const ConnectionId = op.id;
  try {
    switch (op.op) {
      case "post": {
        const r = await c.send(new PostToConnectionCommand({ ConnectionId, Data: bodyOf(op) }));
        return { ok: true, result: { status: r.$metadata.httpStatusCode } };
      }
      case "get": {
        const r = await c.send(new GetConnectionCommand({ ConnectionId }));
        return {
          ok: true,
          result: {
            status: r.$metadata.httpStatusCode,
            connectedAt: iso(r.ConnectedAt),
            lastActiveAt: iso(r.LastActiveAt),
            identity: { sourceIp: r.Identity?.SourceIp ?? null, userAgent: r.Identity?.UserAgent ?? null },
          },
        };
      }
      case "delete": {
        const r = await c.send(new DeleteConnectionCommand({ ConnectionId }));
        return { ok: true, result: { status: r.$metadata.httpStatusCode } };
      }
      case "flood": {
        const Data = Buffer.alloc(op.size ?? 65536, "x");
        let posted = 0;
        for (let i = 0; i < (op.count ?? 100); i++) {
          try {
            await c.send(new PostToConnectionCommand({ ConnectionId, Data }));
          } catch (err) {
            return { ok: false, posted, error: errorOf(err) };
          }
          posted++;
        }
        return { ok: true, posted };
      }
      default:
        return { driver_error: `unknown op ${op.op}` };
    }
  } catch (err) {
    return { ok: false, error: errorOf(err) };
  }
}

const emit = (v) => new Promise((resolve) => process.stdout.write(JSON.stringify(v) + "\n", resolve));

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.opsFile == null) {
    const [op, id] = opts.positional;
    if (!op || id == null) throw new Error("OP and CONNECTION_ID are required without --ops-file");
    await emit(await run({ op, id, data: opts.data, data_hex: opts.dataHex }, opts));
    return;
  }
  const input = opts.opsFile === "-" ? process.stdin : createReadStream(opts.opsFile);
  const lines = createInterface({ input, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let op;
    try {
      op = JSON.parse(line);
    } catch (e) {
      await emit({ driver_error: `bad op line: ${e.message}`, line });
      continue;
    }
    await emit(await run(op, opts));
  }
}

main().catch(async (e) => {
  await emit({ driver_error: String(e?.stack ?? e) });
  process.exit(0);
});
