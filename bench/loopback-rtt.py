#!/usr/bin/env python3
"""Loopback round trip between two processes pinned to cores 0 and 1, with an optional
pause between pings: shows what waking an idle thread costs on this machine, the floor
under every latency figure in docs/benchmarks.md.

    python3 bench/loopback-rtt.py 0       # back to back (both sides stay awake)
    python3 bench/loopback-rtt.py 0.01    # 10 ms pause (each side sleeps between pings)
"""
import os
import socket
import sys
import time

gap = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
port = server.getsockname()[1]
if os.fork() == 0:
    os.sched_setaffinity(0, {0})
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(100):
        conn.send(data)
    os._exit(0)
os.sched_setaffinity(0, {1})
client = socket.create_connection(("127.0.0.1", port))
client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(500):
    start = time.perf_counter()
    client.send(b"x")
    client.recv(100)
    rtts.append((time.perf_counter() - start) * 1e6)
    if gap:
        time.sleep(gap)
client.close()
rtts.sort()
print(f"pause {gap * 1000:.0f} ms: p50 {rtts[len(rtts) // 2]:.0f} us, p99 {rtts[len(rtts) * 99 // 100]:.0f} us")
