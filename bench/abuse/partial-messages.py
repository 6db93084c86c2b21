#!/usr/bin/env python3
"""Memory after abuse: N WebSocket clients each send most of one message that never
completes, hold, then all close; repeated for several cycles. Reads the server's RSS
(VmRSS in /proc/PID/status) before, at the peak of, and after each cycle, to show whether
memory held by partial messages is returned to the OS or reused (RSS plateaus) or lost
(RSS climbs cycle after cycle). Standard library only; loopback only.

    taskset -c 0 target/release/signalbox serve --dev --config bench/abuse/limits.toml \\
        --listen 127.0.0.1:0 > /tmp/sb.out 2>/dev/null &
    PID=$!; sleep 0.5; ADDR=$(sed -n "s/signalbox listening on //p" /tmp/sb.out)
    taskset -c 1 python3 bench/abuse/partial-messages.py --server "$ADDR" --server-pid "$PID"

Options: --connections 1000 --bytes 130000 --cycles 5 --idle 5
--mode frame|fragments|complete (--announce: the payload length the frame header
announces in `frame` mode, default --bytes + 1000; --watch N: after the last cycle, RSS
every second for N s; --json FILE writes the figures).

`frame` mode: one masked text frame whose header announces --announce bytes, of which
only --bytes are sent. `fragments` mode: a text frame without FIN and continuation frames
without FIN, 16 KiB each, --bytes in all; the final fragment never comes. `complete` mode,
for comparison: one whole --bytes text frame (not JSON, so the server answers with an
error frame), then the connection stays open and idle until the cycle closes it.
All stay under the server's limits: bench/abuse/limits.toml raises
limits.max_message_size to 256 KiB (the default, 64 KiB, would answer a completed 130 KB
message with PAYLOAD_TOO_LARGE; the connection is only closed with 1009 above twice the
limit, 128 KiB).

Each connection is closed with a TCP FIN. A cycle ends when the server's count of open
file descriptors is back where it started, then --idle seconds pass before "after".
"""
import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time

FRAGMENT = 16 * 1024


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def frame_header(opcode, fin, length):
    """A client frame header, masked with the zero key (the payload goes out as is)."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    return head + b"\0\0\0\0"


def partial_message(mode, size, announce):
    """The bytes one client sends: a message that never completes."""
    if mode == "frame":
        assert announce > size
        return frame_header(0x1, True, announce) + b"a" * size
    if mode == "complete":
        return frame_header(0x1, True, size) + b"a" * size
    out = bytearray()
    sent, opcode = 0, 0x1
    while sent < size:
        n = min(FRAGMENT, size - sent)
        out += frame_header(opcode, False, n) + b"a" * n
        sent, opcode = sent + n, 0x0
    return bytes(out)


async def open_ws(host, port, sem):
    async with sem:
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            raise RuntimeError(f"upgrade refused: {status}")
        return reader, writer


async def drain_incoming(reader):
    """Reads (and drops) what the server sends, so its writes never block."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, asyncio.CancelledError):
        pass


async def send(writer, data, sem):
    async with sem:
        writer.write(data)
        await writer.drain()


class Sampler:
    """Samples the server's RSS every `period` seconds; `peak` since the last reset."""

    def __init__(self, pid, period=0.05):
        self.pid, self.period, self.peak = pid, period, 0

    async def run(self):
        while True:
            self.peak = max(self.peak, rss_kib(self.pid))
            await asyncio.sleep(self.period)


async def wait_stable(pid, settle=1.0, limit=60.0):
    """Waits until RSS has not grown for `settle` seconds (the server has read everything)."""
    start = time.monotonic()
    best, since = rss_kib(pid), time.monotonic()
    while time.monotonic() - start < limit:
        await asyncio.sleep(0.1)
        now = rss_kib(pid)
        if now > best:
            best, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            break


async def wait_fds(pid, target, limit=60.0):
    start = time.monotonic()
    while open_fds(pid) > target and time.monotonic() - start < limit:
        await asyncio.sleep(0.1)
    return open_fds(pid)


async def cycle(args, host, port, payload, fds_before, sampler):
    sem = asyncio.Semaphore(100)
    before = rss_kib(args.server_pid)
    t0 = time.monotonic()
    socks = await asyncio.gather(*(open_ws(host, port, sem) for _ in range(args.connections)))
    readers = [asyncio.create_task(drain_incoming(r)) for r, _ in socks]
    connected = rss_kib(args.server_pid)
    sampler.peak = 0
    await asyncio.gather(*(send(w, payload, sem) for _, w in socks))
    await wait_stable(args.server_pid)
    await asyncio.sleep(args.hold)
    peak = max(sampler.peak, rss_kib(args.server_pid))
    held = rss_kib(args.server_pid)
    for _, w in socks:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in socks), return_exceptions=True)
    for t in readers:
        t.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    fds = await wait_fds(args.server_pid, fds_before)
    closed_in = time.monotonic() - t0
    await asyncio.sleep(args.idle)
    after = rss_kib(args.server_pid)
    return {
        "before_kib": before,
        "connected_kib": connected,
        "peak_kib": peak,
        "held_kib": held,
        "after_kib": after,
        "server_fds_after": fds,
        "cycle_seconds": round(closed_in, 2),
    }


async def main(args):
    host, port = args.server.rsplit(":", 1)
    port = int(port)
    announce = args.announce or args.bytes + 1000
    payload = partial_message(args.mode, args.bytes, announce)
    fds_before = open_fds(args.server_pid)
    start = rss_kib(args.server_pid)
    sampler = Sampler(args.server_pid)
    sampling = asyncio.create_task(sampler.run())
    print(
        f"{args.connections} connections x {args.bytes} B of one unfinished message ({args.mode} mode"
        + {"frame": f", header announces {announce} B", "fragments": f", {FRAGMENT} B fragments", "complete": ""}[args.mode]
        + f"), {args.cycles} cycles; server pid {args.server_pid}, RSS at start {start / 1024:.1f} MiB",
        flush=True,
    )
    print("| cycle | before | connected | peak | peak - before, per connection | after (idle {:g} s) |".format(args.idle))
    print("|---|---|---|---|---|---|")
    rows = []
    for i in range(1, args.cycles + 1):
        row = await cycle(args, host, port, payload, fds_before, sampler)
        rows.append(row)
        per_conn = (row["peak_kib"] - row["before_kib"]) / args.connections
        print(
            f"| {i} | {row['before_kib'] / 1024:.1f} MiB | {row['connected_kib'] / 1024:.1f} MiB "
            f"| {row['peak_kib'] / 1024:.1f} MiB | {per_conn:.0f} KiB | {row['after_kib'] / 1024:.1f} MiB |",
            flush=True,
        )
    sampling.cancel()
    afters = [r["after_kib"] for r in rows]
    peaks = [r["peak_kib"] for r in rows]
    summary = f"after the last cycle: {afters[-1] / 1024:.1f} MiB ({(afters[-1] - start) / 1024:+.1f} MiB since start)"
    if len(rows) >= 3:
        summary += (
            f"; cycle 2 -> {len(rows)}: peak {(peaks[-1] - peaks[1]) / 1024:+.1f} MiB, "
            f"after {(afters[-1] - afters[1]) / 1024:+.1f} MiB"
        )
    print(summary, flush=True)
    watch = []
    for second in range(1, int(args.watch) + 1):
        await asyncio.sleep(1)
        watch.append(rss_kib(args.server_pid))
        print(f"  +{second} s: {watch[-1] / 1024:.1f} MiB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "start_kib": start, "cycles": rows, "watch_kib": watch}, f, indent=1)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True, help="ip:port of the server")
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--bytes", type=int, default=130_000, help="bytes of the unfinished message each client sends")
    p.add_argument("--announce", type=int, default=0, help="frame mode: payload length in the header")
    p.add_argument("--mode", choices=["frame", "fragments", "complete"], default="frame")
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument("--hold", type=float, default=1.0, help="seconds to hold once the server has read everything")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle after a cycle before reading RSS")
    p.add_argument("--watch", type=float, default=0, help="then print RSS every second for this many seconds")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args()
    try:
        asyncio.run(main(args))
    except KeyboardInterrupt:
        sys.exit(130)
