#!/usr/bin/env node
// A real socket.io-client (4.x, pinned in package.json) driven by tests/it/socketio.rs.
//
// Speaks JSON lines: one command per line on stdin, one report per line on stdout.
// Several sockets may live in one driver; every command and report names its socket with
// "socket" (default "main"). Commands:
//
//   {"cmd":"connect","url":"http://127.0.0.1:PORT/ws","opts":{...}}
//       io(url, opts) with forceNew: true (each socket has its own Manager, hence its own
//       Engine.IO connection); opts go to socket.io-client unchanged (auth, query,
//       transports, reconnection, ...).
//   {"cmd":"emit","event":"subscribe","data":{...},"ack":true,"id":N,"timeout":MS}
//       socket.emit(event, data[, ack]); "args":[...] instead of "data" sends several
//       arguments. With "ack" the ack's arguments are reported as {"kind":"ack","id":N};
//       with "timeout" too, socket.timeout(MS) is used and a missing ack is reported as
//       {"kind":"ack_timeout","id":N}.
//   {"cmd":"close_engine"}   socket.io.engine.close(): the network is lost (the client
//                            reconnects if reconnection is on, with state recovery if the
//                            server offers it)
//   {"cmd":"disconnect"}     socket.disconnect()
//   {"cmd":"connect_again"}  socket.connect() after a disconnect
//   {"cmd":"state"}          reports {"kind":"state", connected, id, recovered, transport}
//   {"cmd":"exit"}           closes every socket and exits (so does the end of stdin)
//
// Reports (each with "socket", in the order they happen):
//   {"kind":"ready","version":V}                       once, at start (no socket)
//   {"kind":"done","cmd":C,"id":N}                     a command was carried out
//   {"kind":"connect","id":SID,"recovered":B,"transport":"websocket"|"polling"}
//   {"kind":"connect_error","message":M,"data":D,"description":X,"type":T}
//   {"kind":"disconnect","reason":R,"description":X}
//   {"kind":"event","name":E,"args":[...]}             every event, through socket.onAny
//   {"kind":"ack","id":N,"args":[...]}
//   {"kind":"ack_timeout","id":N}
//   {"kind":"open","transport":T}                      an Engine.IO connection opened on T
//   {"kind":"upgrade","transport":T}                   the Engine.IO transport upgraded
//   {"kind":"reconnect_attempt","attempt":N} / {"kind":"reconnect","attempt":N}
//   {"kind":"reconnect_error","message":M} / {"kind":"manager_error","message":M}
//   {"kind":"driver_error","message":M}                a command the driver could not run
//
// Binary arguments are reported as {"_binary": "<base64>"}.
"use strict";

const readline = require("readline");
const { io } = require("socket.io-client");
const version = require("socket.io-client/package.json").version;

const sockets = new Map();

function out(report) {
  process.stdout.write(JSON.stringify(report, binaryAsBase64) + "\n");
}

function binaryAsBase64(_key, value) {
  if (value && value.type === "Buffer" && Array.isArray(value.data)) {
    return { _binary: Buffer.from(value.data).toString("base64") };
  }
  if (value instanceof ArrayBuffer) {
    return { _binary: Buffer.from(value).toString("base64") };
  }
  if (ArrayBuffer.isView(value) && !Buffer.isBuffer(value)) {
    return { _binary: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  }
  return value;
}

function describe(x) {
  if (x === undefined || x === null) return null;
  if (x instanceof Error) return { message: x.message, description: describe(x.description) };
  if (typeof x === "object") {
    try {
      JSON.stringify(x);
      return x;
    } catch (_) {
      return String(x);
    }
  }
  return x;
}

function transportName(socket) {
  const engine = socket.io && socket.io.engine;
  return engine && engine.transport ? engine.transport.name : null;
}

function connect(name, url, opts) {
  if (sockets.has(name)) {
    sockets.get(name).disconnect();
  }
  const socket = io(url, Object.assign({ forceNew: true }, opts || {}));
  sockets.set(name, socket);
  const report = (r) => out(Object.assign({ socket: name }, r));

  socket.on("connect", () => {
    report({ kind: "connect", id: socket.id, recovered: socket.recovered === true, transport: transportName(socket) });
  });
  socket.on("connect_error", (err) => {
    report({
      kind: "connect_error",
      message: err && err.message,
      data: describe(err && err.data),
      description: describe(err && err.description),
      type: (err && err.type) || null,
    });
  });
  socket.on("disconnect", (reason, description) => {
    report({ kind: "disconnect", reason, description: describe(description) });
  });
  socket.onAny((event, ...args) => {
    report({ kind: "event", name: event, args });
  });

  const manager = socket.io;
  // The Manager opens a new engine on every (re)connection: watch each for upgrades.
  manager.on("open", () => {
    const engine = manager.engine;
    report({ kind: "open", transport: engine.transport ? engine.transport.name : null });
    engine.on("upgrade", (transport) => report({ kind: "upgrade", transport: transport.name }));
  });
  manager.on("reconnect_attempt", (attempt) => report({ kind: "reconnect_attempt", attempt }));
  manager.on("reconnect", (attempt) => report({ kind: "reconnect", attempt }));
  manager.on("reconnect_error", (err) => report({ kind: "reconnect_error", message: err && err.message }));
  manager.on("error", (err) => report({ kind: "manager_error", message: err && err.message }));
}

function emit(name, socket, command) {
  const args = Array.isArray(command.args) ? command.args.slice() : "data" in command ? [command.data] : [];
  const id = command.id;
  if (!command.ack) {
    socket.emit(command.event, ...args);
    return;
  }
  if (typeof command.timeout === "number") {
    socket.timeout(command.timeout).emit(command.event, ...args, (err, ...reply) => {
      if (err) out({ socket: name, kind: "ack_timeout", id });
      else out({ socket: name, kind: "ack", id, args: reply });
    });
  } else {
    socket.emit(command.event, ...args, (...reply) => out({ socket: name, kind: "ack", id, args: reply }));
  }
}

function run(command) {
  const name = command.socket || "main";
  if (command.cmd === "connect") {
    connect(name, command.url, command.opts);
    return;
  }
  if (command.cmd === "exit") {
    exit();
    return;
  }
  const socket = sockets.get(name);
  if (!socket) throw new Error(`no socket named ${name}; send connect first`);
  switch (command.cmd) {
    case "emit":
      emit(name, socket, command);
      break;
    case "close_engine":
      socket.io.engine.close();
      break;
    case "disconnect":
      socket.disconnect();
      break;
    case "connect_again":
      socket.connect();
      break;
    case "state":
      out({
        socket: name,
        kind: "state",
        connected: socket.connected,
        id: socket.id || null,
        recovered: socket.recovered === true,
        transport: transportName(socket),
      });
      break;
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

function exit() {
  for (const socket of sockets.values()) socket.disconnect();
  // Let the close packets go out before leaving.
  setImmediate(() => process.exit(0));
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
  } catch (e) {
    out({ kind: "driver_error", message: `not JSON: ${e.message}`, line });
    return;
  }
  try {
    run(command);
    out({ socket: command.socket || "main", kind: "done", cmd: command.cmd, id: command.id === undefined ? null : command.id });
  } catch (e) {
    out({ socket: command.socket || "main", kind: "driver_error", message: e.message, cmd: command.cmd });
  }
});
lines.on("close", exit);

out({ kind: "ready", version });
