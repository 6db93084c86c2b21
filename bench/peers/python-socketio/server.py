"""Reference peer for `signalbox-bench --protocol socketio`: python-socketio on aiohttp.

The way python-socketio is usually deployed: one process, one asyncio event loop (the
standard one, not uvloop), `socketio.AsyncServer(async_mode="aiohttp")` attached to an
aiohttp application that also serves the publish route. Rooms are topics.

    python server.py [--port N] [--host H]      (PORT / HOST in the environment work too)

Prints `listening on <host>:<port>` on stdout once it accepts connections (port 0 picks
a free port: the socket is bound here and handed to aiohttp).

Socket.IO (path /socket.io/, default namespace, no authentication):
    emit "subscribe" {"topic": T}   -> the client joins room T; the server emits
                                       "subscribed" {"topic": T, "offset": <last offset>}
                                       and acks {"status": "success", "topic", "offset"}
    emit "unsubscribe" {"topic": T} -> leaves room T; ack {"status": "success", "topic"}
HTTP:
    POST /api/publish {"topic": T, "event": {...}} -> 200 {"offset": n, "topic": T}
    and room T gets the event "event" with {"topic", "offset", "timestamp", ...event}
    (python-socketio encodes a room emit once and queues it to each member).

Not implemented (the bench does not use them): tokens, history and resume, retained
state, filters, client publish, rate limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
from datetime import datetime, timezone

import socketio
from aiohttp import web

MAX_TOPIC = 256

sio = socketio.AsyncServer(async_mode="aiohttp")
app = web.Application()  # client_max_size: aiohttp's default, 1 MiB
sio.attach(app)

# topic -> last assigned offset
offsets: dict[str, int] = {}


def valid_topic(topic: object) -> bool:
    return isinstance(topic, str) and 0 < len(topic) <= MAX_TOPIC


def topic_of(data: object) -> object:
    return data.get("topic") if isinstance(data, dict) else None


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validation_error(message: str) -> dict:
    return {"status": "error", "code": "VALIDATION_ERROR", "message": message}


@sio.on("subscribe")
async def subscribe(sid: str, data: object = None) -> dict:
    topic = topic_of(data)
    if not valid_topic(topic):
        error = validation_error("missing or bad topic")
        await sio.emit("error", error, to=sid)
        return error
    await sio.enter_room(sid, topic)
    reply = {"topic": topic, "offset": offsets.get(topic, 0)}
    await sio.emit("subscribed", reply, to=sid)
    return {"status": "success", **reply}


@sio.on("unsubscribe")
async def unsubscribe(sid: str, data: object = None) -> dict:
    topic = topic_of(data)
    if not valid_topic(topic):
        return validation_error("missing or bad topic")
    await sio.leave_room(sid, topic)
    return {"status": "success", "topic": topic}


def http_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def publish(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return http_error(400, "VALIDATION_ERROR", "malformed JSON")
    except web.HTTPRequestEntityTooLarge:
        return http_error(413, "PAYLOAD_TOO_LARGE", "body too large")
    topic = body.get("topic") if isinstance(body, dict) else None
    event = body.get("event") if isinstance(body, dict) else None
    if not valid_topic(topic):
        return http_error(400, "VALIDATION_ERROR", "missing or bad topic")
    if not isinstance(event, dict):
        return http_error(400, "VALIDATION_ERROR", "event must be an object")
    offset = offsets.get(topic, 0) + 1
    offsets[topic] = offset
    frame = {"topic": topic, "offset": offset, "timestamp": now_rfc3339()}
    for key, value in event.items():
        frame.setdefault(key, value)
    await sio.emit("event", frame, room=topic)
    return web.json_response({"offset": offset, "topic": topic})


app.router.add_post("/api/publish", publish)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    return parser.parse_args()


async def serve(host: str, port: int) -> None:
    # Bind here so that port 0 works and the real port can be printed.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # What web.run_app(app, sock=sock) does, without its banner; no access log.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    bound_host, bound_port = sock.getsockname()[:2]
    print(f"listening on {bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    args = parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
