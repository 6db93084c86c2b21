"""The asyncio AsyncClient against a real gateway, with real WebSocket subscribers.

Each test runs its own event loop with asyncio.run (no pytest plugin needed).
"""

from __future__ import annotations

import asyncio
import functools
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Tuple

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conftest import API_KEY, Gateway, unique
from signalbox_client import AsyncClient, SignalboxError


def run_async(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return wrapper


@asynccontextmanager
async def open_ws(
    gateway: Gateway, sub: str, *topics: str
) -> AsyncIterator[Tuple[ClientConnection, Dict[str, Any]]]:
    query = "&".join([f"token={gateway.token(sub)}"] + [f"topic={t}" for t in topics])
    async with connect(f"{gateway.ws_url}?{query}", open_timeout=5) as ws:
        hello = await recv(ws)
        assert hello["type"] == "connected", hello
        for topic in topics:
            reply = await recv(ws)
            assert reply["type"] == "subscribed" and reply["topic"] == topic, reply
        yield ws, hello


async def recv(ws: ClientConnection, timeout: float = 5.0) -> Dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def client(gateway: Gateway, **kwargs: Any) -> AsyncClient:
    return AsyncClient(gateway.url, api_key=API_KEY, timeout=5, **kwargs)


@run_async
async def test_publish_reaches_subscriber_with_offset(gateway: Gateway) -> None:
    topic = unique()
    async with client(gateway) as sb, open_ws(gateway, "a_pub", topic) as (ws, _):
        results = await asyncio.gather(
            *(sb.publish(topic, {"type": "progress_update", "progress": p}) for p in (10, 20, 30))
        )
        assert sorted(r["offset"] for r in results) == [1, 2, 3]
        got = [await recv(ws) for _ in range(3)]
    assert [e["offset"] for e in got] == [1, 2, 3]
    by_offset = {r["offset"]: r for r in results}
    assert all(e["topic"] == topic and by_offset[e["offset"]]["topic"] == topic for e in got)


@run_async
async def test_retain_topic_and_history(gateway: Gateway) -> None:
    topic = unique()
    async with client(gateway) as sb:
        for i in range(1, 5):
            await sb.publish(topic, {"type": "progress_update", "progress": i * 25})
        await sb.publish(topic, {"type": "job_complete", "status": "done"}, retain=True)
        info = await sb.topic(topic)
        assert info["offset"] == 5 and info["state"] is not None
        assert info["state"]["type"] == "job_complete" and info["state"]["offset"] == 5
        page = await sb.history(topic, since=2, limit=2)
        assert [e["offset"] for e in page["events"]] == [3, 4] and page["recovered"] is True
        assert len((await sb.history(topic))["events"]) == 5


@run_async
async def test_presence_and_connections(gateway: Gateway) -> None:
    topic = unique()
    user = unique("user").split(":")[1]
    async with client(gateway) as sb, open_ws(gateway, user, topic) as (_, hello):
        presence = await sb.presence(topic)
        assert presence["users"] == [user] and presence["connections"] == 1
        mine = (await sb.connections(user=user))["connections"]
        assert [c["connectionId"] for c in mine] == [hello["connectionId"]]
        assert [c["userId"] for c in (await sb.connections(topic=topic))["connections"]] == [user]


@run_async
async def test_send_then_disconnect(gateway: Gateway) -> None:
    async with client(gateway) as sb, open_ws(gateway, "a_send") as (ws, hello):
        cid = hello["connectionId"]
        assert await sb.send(cid, {"type": "direct", "text": "hi"}) == {"delivered": True}
        assert await recv(ws) == {"type": "direct", "text": "hi"}
        await sb.disconnect(cid)
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        with pytest.raises(SignalboxError) as gone:
            await sb.send(cid, {"type": "direct"})
        assert gone.value.code == "NOT_FOUND" and gone.value.status == 404


@run_async
async def test_broadcast_and_batch(gateway: Gateway) -> None:
    topic = unique()
    async with client(gateway) as sb, open_ws(gateway, "a_bc", topic) as (ws, _):
        sent = await sb.broadcast({"type": "maintenance_async"})
        got = await recv(ws)
        while got.get("type") != "maintenance_async":
            got = await recv(ws)
        assert got["topic"] == "global" and got["offset"] == sent["offset"]
        answer = await sb.publish_batch(
            [{"topic": topic, "event": {"type": "step", "n": n}} for n in range(3)]
            + [{"topic": topic, "event": {"no": "type"}}]
        )
        assert [r.get("offset") for r in answer["results"][:3]] == [1, 2, 3]
        assert answer["results"][3]["error"]["code"] == "VALIDATION_ERROR"
        assert [(await recv(ws))["n"] for _ in range(3)] == [0, 1, 2]


@run_async
async def test_errors(gateway: Gateway) -> None:
    async with AsyncClient(gateway.url, api_key="wrong-key-123") as bad:
        with pytest.raises(SignalboxError) as err:
            await bad.publish("job:1", {"type": "x"})
        assert err.value.code == "AUTHENTICATION_ERROR" and err.value.status == 401
    async with client(gateway) as sb:
        with pytest.raises(SignalboxError) as err:
            await sb.topic("job:")
        assert err.value.code == "VALIDATION_ERROR" and err.value.status == 400
        with pytest.raises(SignalboxError) as err:
            await sb.disconnect("conn_0_doesnotexist")
        assert err.value.code == "NOT_FOUND" and err.value.status == 404
        with pytest.raises(SignalboxError) as err:
            await sb.publish("job:1", {"type": 5})
        assert err.value.code == "VALIDATION_ERROR" and err.value.status is None
    async with AsyncClient("http://127.0.0.1:9", retries=0) as offline:
        with pytest.raises(SignalboxError) as err:
            await offline.presence("job:1")
        assert err.value.code == "CONNECTION_ERROR" and err.value.status is None
