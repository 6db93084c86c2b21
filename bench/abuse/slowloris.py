#!/usr/bin/env python3
"""Slowloris against a running gateway, as an attacker would, while a normal client is
served: --idle sockets that send nothing, --partial sockets that each send a request line
and --header-bytes of one header (never the blank line), all held. Reports the server's
RSS (VmRSS of --server-pid) before, with the attack held, and after; how long the server
took to close the attacker sockets; and what a normal client saw meanwhile: /health
latency (a fresh connection every 100 ms) and a WebSocket subscriber receiving an event
published every 100 ms. Standard library only; loopback only.

    target/release/signalbox serve --dev --listen 127.0.0.1:0 > /tmp/sb.out 2>/dev/null &
    PID=$!; sleep 0.5; ADDR=$(sed -n "s/signalbox listening on //p" /tmp/sb.out)
    python3 bench/abuse/slowloris.py --server "$ADDR" --server-pid "$PID"

At the file limit: start the server under `ulimit -n 256` (in a subshell) and attack with
more sockets than that, e.g. --idle 400 --partial 0. Options: --idle 300 --partial 300
--header-bytes 400000 --hold 30 (seconds to wait for the server to close them).
"""
import argparse
import asyncio
import base64
import json
import os
import statistics
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def attacker(host, port, head, chunk, closed_at):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        closed_at.append(0.0)
        return
    try:
        for i in range(0, len(head), chunk):
            writer.write(head[i : i + chunk])
            await writer.drain()
        # Hold: the server must close it. Anything it sends (a 431, say) is read away.
        while await reader.read(65536):
            pass
    except OSError:
        pass
    closed_at.append(time.monotonic())
    writer.close()


async def http_get(host, port, path):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data


async def publish(host, port, topic, seq):
    body = json.dumps({"topic": topic, "event": {"type": "tick", "seq": seq}}).encode()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await reader.read()
    writer.close()


def ws_frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_read(reader):
    first = await reader.readexactly(2)
    n = first[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return first[0] & 0x0F, await reader.readexactly(n)


async def subscriber(host, port, topic, received, stop):
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    writer.write(ws_frame(json.dumps({"action": "subscribe", "topic": topic})))
    while not stop.is_set():
        try:
            opcode, payload = await asyncio.wait_for(ws_read(reader), 0.5)
        except asyncio.TimeoutError:
            continue
        if opcode == 1 and b'"type":"tick"' in payload:
            received.append(json.loads(payload)["seq"])
        elif opcode == 8:
            break
    writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--idle", type=int, default=300)
    p.add_argument("--partial", type=int, default=300)
    p.add_argument("--header-bytes", type=int, default=400_000)
    p.add_argument("--hold", type=float, default=30.0)
    a = p.parse_args()
    host, port = a.server.rsplit(":", 1)
    port = int(port)
    pid = a.server_pid

    rss_before, files_before = rss_kb(pid), open_files(pid)
    stop = asyncio.Event()
    received, health_ms, health_failed = [], [], 0
    sub = asyncio.create_task(subscriber(host, port, "job:normal", received, stop))
    await asyncio.sleep(0.3)

    async def normal_client():
        nonlocal health_failed
        seq = 0
        while not stop.is_set():
            t = time.monotonic()
            try:
                answer = await asyncio.wait_for(http_get(host, port, "/health"), 5)
                if answer.startswith(b"HTTP/1.1 200"):
                    health_ms.append((time.monotonic() - t) * 1000)
                else:
                    health_failed += 1
            except (OSError, asyncio.TimeoutError):
                health_failed += 1
            seq += 1
            try:
                await asyncio.wait_for(publish(host, port, "job:normal", seq), 5)
            except (OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.1)

    normal = asyncio.create_task(normal_client())
    started = time.monotonic()
    closed_at = []
    head = b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * a.header_bytes
    tasks = [asyncio.create_task(attacker(host, port, b"", 1, closed_at)) for _ in range(a.idle)]
    tasks += [asyncio.create_task(attacker(host, port, head, 16384, closed_at)) for _ in range(a.partial)]
    await asyncio.sleep(1.0)
    rss_held, files_held = rss_kb(pid), open_files(pid)
    done, pending = await asyncio.wait(tasks, timeout=a.hold)
    still_open = len(pending)
    for t in pending:
        t.cancel()
    await asyncio.sleep(1.0)
    rss_after, files_after = rss_kb(pid), open_files(pid)
    stop.set()
    await asyncio.gather(normal, sub, return_exceptions=True)
    closes = sorted(t - started for t in closed_at if t > 0)
    report = {
        "attacker_sockets": a.idle + a.partial,
        "closed_by_server": len(closes),
        "still_open_after_hold": still_open,
        "close_after_s": {
            "median": round(statistics.median(closes), 2) if closes else None,
            "max": round(closes[-1], 2) if closes else None,
        },
        "rss_kb": {"before": rss_before, "attack_held": rss_held, "after": rss_after},
        "server_open_files": {"before": files_before, "attack_held": files_held, "after": files_after},
        "normal_client": {
            "health_ok": len(health_ms),
            "health_failed": health_failed,
            "health_ms_median": round(statistics.median(health_ms), 2) if health_ms else None,
            "health_ms_max": round(max(health_ms), 2) if health_ms else None,
            "events_received": len(received),
            "events_in_order_no_gap": received == list(range(received[0], received[0] + len(received)))
            if received
            else False,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
