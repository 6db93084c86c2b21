#!/usr/bin/env python3
"""What an unchanged boto3 backend gets from Signalbox's API Gateway management API.

Opens one WebSocket receiver at /ws (the `websockets` client, in a thread), learns its
connectionId from the `connected` frame, then calls boto3's
`apigatewaymanagementapi.post_to_connection` exactly as a backend does:

    boto3.client("apigatewaymanagementapi", endpoint_url=..., region_name="us-east-1",
                 aws_access_key_id=..., aws_secret_access_key=...)

1. serial:  one client, --calls calls one after another;
2. threads: --threads threads with one client each, --calls calls in all;
3. null:    the same serial loop against a local do-nothing HTTP server (a subprocess,
            a raw asyncio protocol answering an empty 200 to every request), so boto3's
            own cost per call (building, signing, parsing: about a millisecond) is told
            apart from the server's. Every phase also reports this process's CPU per call.

Each phase reports calls/s and latency p50/p99 of the call, and (1, 2) the end-to-end
latency (body built -> frame read by the receiver) and whether every 200 arrived exactly
once. Prints a summary and writes it as JSON (--out). Exit 1 if a call failed or a
frame was lost. Talks to loopback addresses only; every loop is bounded by --calls.

    python3 bench/apigw/boto3_post.py --endpoint http://127.0.0.1:8080 \
        --ws-url 'ws://127.0.0.1:8080/ws?token=...' --key AKID --secret SECRET

Needs boto3 and websockets (pip install boto3 websockets).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time

WARMUP_CALLS = 5


def percentile(values, q):
    """Nearest-rank percentile of a list of numbers (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def ms(ns):
    return None if ns is None else ns / 1e6


class Receiver:
    """One WebSocket connection at /ws, opened and read in a thread of its own."""

    def __init__(self, url):
        self.url = url
        self.connection_id = None
        self.lock = threading.Lock()
        self.seqs = []
        self.latency_ns = {}
        self.other = 0
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(timeout=15) or self.connection_id is None:
            raise RuntimeError(f"the receiver did not connect: {self.error or 'no connected frame within 15 s'}")

    def _run(self):
        from websockets.sync.client import connect

        try:
            with connect(self.url, open_timeout=10, max_size=None) as ws:
                deadline = time.monotonic() + 10
                while self.connection_id is None:
                    frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                    if frame.get("type") == "connected":
                        self.connection_id = frame["connectionId"]
                self.ready.set()
                self._read(ws)
        except Exception as e:  # refused, closed by the server, or broken
            self.error = repr(e)
        finally:
            self.ready.set()

    def _read(self, ws):
        while not self.stop.is_set():
            try:
                frame = ws.recv(timeout=0.1)
            except TimeoutError:
                continue
            now = time.perf_counter_ns()
            try:
                body = json.loads(frame)
                seq, sent = body["seq"], body["sent"]
            except (ValueError, KeyError, TypeError):
                self.other += 1
                continue
            with self.lock:
                self.seqs.append(seq)
                self.latency_ns[seq] = now - sent

    def count(self):
        with self.lock:
            return len(self.seqs)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


class Counter:
    """Sequence numbers unique in the process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.next = 0

    def take(self):
        with self.lock:
            seq = self.next
            self.next += 1
            return seq


def body(seq, size):
    head = {"seq": seq, "to": 0, "sent": time.perf_counter_ns()}
    text = json.dumps(head, separators=(",", ":"))
    pad = size - len(text) - len(',"pad":""')
    if pad > 0:
        head["pad"] = "x" * pad
        text = json.dumps(head, separators=(",", ":"))
    return text.encode()


def new_client(args, endpoint):
    import boto3

    # A session per client: boto3's default session is not thread-safe to create clients from.
    return boto3.session.Session().client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=args.key,
        aws_secret_access_key=args.secret,
    )


def calls_loop(client, connection_id, counter, n, size, record):
    """n post_to_connection calls; record(seq, ok, error, elapsed_ns) for each."""
    from botocore.exceptions import ClientError

    for _ in range(n):
        seq = counter.take()
        data = body(seq, size)
        started = time.perf_counter_ns()
        try:
            client.post_to_connection(ConnectionId=connection_id, Data=data)
            record(seq, True, None, time.perf_counter_ns() - started)
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            record(seq, False, f"{status} {e.response.get('Error', {}).get('Code', '?')}", None)
        except Exception as e:  # connection refused, timeouts
            record(seq, False, type(e).__name__, None)


class Phase:
    """Outcomes of one phase's calls."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = []
        self.latency_ns = []
        self.errors = {}
        self.measuring = False

    def record(self, seq, ok, error, elapsed_ns):
        with self.lock:
            if ok:
                self.ok.append(seq)
                if self.measuring:
                    self.latency_ns.append(elapsed_ns)
            else:
                self.errors[error] = self.errors.get(error, 0) + 1


def run_phase(args, endpoint, connection_id, counter, threads, calls):
    """Warm-up calls, then `calls` calls spread over `threads` clients; returns stats."""
    phase = Phase()
    clients = [new_client(args, endpoint) for _ in range(threads)]
    for client in clients:
        calls_loop(client, connection_id, counter, WARMUP_CALLS, args.body_size, phase.record)
    phase.measuring = True
    first_seq = counter.next
    shares = [calls // threads + (1 if i < calls % threads else 0) for i in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(client, n):
        barrier.wait()
        calls_loop(client, connection_id, counter, n, args.body_size, phase.record)

    workers = [threading.Thread(target=worker, args=(c, n)) for c, n in zip(clients, shares)]
    for w in workers:
        w.start()
    barrier.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    for w in workers:
        w.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    measured_ok = sum(1 for seq in phase.ok if seq >= first_seq)
    return phase, {
        "threads": threads,
        "calls": calls,
        "ok": measured_ok,
        "errors": dict(phase.errors),
        "calls_per_s": measured_ok / elapsed if elapsed > 0 else None,
        "p50_ms": ms(percentile(phase.latency_ns, 0.50)),
        "p99_ms": ms(percentile(phase.latency_ns, 0.99)),
        "mean_ms": ms(statistics.fmean(phase.latency_ns)) if phase.latency_ns else None,
        # This process's CPU (boto3, and the receiver thread while it runs) per call.
        "client_cpu_ms_per_call": cpu * 1e3 / calls,
        "first_seq": first_seq,
    }


def delivery(receiver, phase, stats, expected_total):
    """Waits (3 s at most) for every 200 so far, then checks this phase's deliveries."""
    deadline = time.monotonic() + 3
    while receiver.count() < expected_total and time.monotonic() < deadline:
        time.sleep(0.01)
    with receiver.lock:
        seen = {}
        for seq in receiver.seqs:
            seen[seq] = seen.get(seq, 0) + 1
        e2e = [receiver.latency_ns[s] for s in phase.ok if s >= stats["first_seq"] and s in receiver.latency_ns]
    ok = set(phase.ok)
    stats["lost"] = sum(1 for seq in ok if seq not in seen)
    stats["duplicates"] = sum(n - 1 for seq, n in seen.items() if n > 1 and seq in ok)
    stats["e2e_p50_ms"] = ms(percentile(e2e, 0.50))
    stats["e2e_p99_ms"] = ms(percentile(e2e, 0.99))


# --- the do-nothing server -----------------------------------------------------------------


class NullProtocol(asyncio.Protocol):
    """Answers every HTTP/1.1 request on the connection with an empty 200, keep-alive.

    A raw asyncio protocol rather than http.server: http.server's own cost per request
    (a few hundred µs) would be counted as boto3's."""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                length = int(head[at + len(b"\r\ncontent-length:") :].split(b"\r\n", 1)[0])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def serve_null(cpu):
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(NullProtocol, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        # Ends when the parent closes our stdin (or kills us).
        await loop.run_in_executor(None, sys.stdin.read)

    asyncio.run(serve())


def null_phase(args):
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--null-server"]
        + (["--null-server-cpu", str(args.null_server_cpu)] if args.null_server_cpu is not None else []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(child.stdout.readline())
        _, stats = run_phase(args, f"http://127.0.0.1:{port}", "conn_null", Counter(), 1, args.calls)
        del stats["first_seq"]
        return stats
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="endpoint_url, e.g. http://127.0.0.1:8080 (a stage may follow: /prod)")
    parser.add_argument("--ws-url", help="the receiver's WebSocket URL, e.g. ws://127.0.0.1:8080/ws?token=…")
    parser.add_argument("--key", default="AKIDEXAMPLE", help="aws_access_key_id")
    parser.add_argument("--secret", default="", help="aws_secret_access_key")
    parser.add_argument("--calls", type=int, default=500, help="calls per phase (after 5 warm-up calls per client)")
    parser.add_argument("--threads", type=int, default=4, help="threads (one boto3 client each) of phase 2")
    parser.add_argument("--body-size", type=int, default=100, help="bytes of each JSON body")
    parser.add_argument("--no-null", action="store_true", help="skip the do-nothing server baseline")
    parser.add_argument("--null-server-cpu", type=int, help="pin the do-nothing server to this core")
    parser.add_argument("--out", help="write the results here as JSON")
    parser.add_argument("--null-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.null_server:
        serve_null(args.null_server_cpu)
        return 0
    if not args.endpoint or not args.ws_url:
        parser.error("--endpoint and --ws-url are required")
    if not 1 <= args.calls <= 100_000 or not 1 <= args.threads <= 64:
        parser.error("--calls must be in 1..100000 and --threads in 1..64")

    import boto3
    import botocore

    receiver = Receiver(args.ws_url)
    counter = Counter()
    results = {
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "python": sys.version.split()[0],
        "body_size": args.body_size,
    }
    acknowledged = 0
    for name, threads in (("serial", 1), ("threads", args.threads)):
        phase, stats = run_phase(args, args.endpoint, receiver.connection_id, counter, threads, args.calls)
        acknowledged += len(phase.ok)
        delivery(receiver, phase, stats, acknowledged)
        del stats["first_seq"]
        results[name] = stats
    results["receiver_error"] = receiver.error
    results["other_frames"] = receiver.other
    receiver.close()
    if not args.no_null:
        results["null"] = null_phase(args)

    def show(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    for name in ("serial", "threads", "null"):
        s = results.get(name)
        if not s:
            continue
        line = (
            f"{name:8} {s['threads']:2} thread(s) {s['ok']:6}/{s['calls']} ok  {show(s['calls_per_s'], '{:.0f}')} calls/s"
            f"  call p50 {show(s['p50_ms'])} ms p99 {show(s['p99_ms'])} ms"
            f"  client CPU {show(s['client_cpu_ms_per_call'])} ms/call"
        )
        if "lost" in s:
            line += f"  e2e p50 {show(s['e2e_p50_ms'])} ms p99 {show(s['e2e_p99_ms'])} ms  lost {s['lost']} dup {s['duplicates']}"
        if s["errors"]:
            line += f"  errors {s['errors']}"
        print(line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    failed = any(results[n]["errors"] or results[n]["lost"] or results[n]["duplicates"] for n in ("serial", "threads"))
    return 1 if failed or results["receiver_error"] else 0


if __name__ == "__main__":
    sys.exit(main())
