"""The synchronous Client against a real gateway, with real WebSocket subscribers."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import API_KEY, Gateway, unique
from signalbox_client import Client, SignalboxError


@contextmanager
def open_ws(
    gateway: Gateway, sub: str, *topics: str
) -> Iterator[Tuple[ClientConnection, Dict[str, Any]]]:
    """A WebSocket client of user `sub`, subscribed to `topics` (each reply awaited)."""
    query = "&".join([f"token={gateway.token(sub)}"] + [f"topic={t}" for t in topics])
    with connect(f"{gateway.ws_url}?{query}", open_timeout=5) as ws:
        hello = recv(ws)
        assert hello["type"] == "connected", hello
        for topic in topics:
            reply = recv(ws)
            assert reply["type"] == "subscribed" and reply["topic"] == topic, reply
        yield ws, hello


def recv(ws: ClientConnection, timeout: float = 5.0) -> Dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def recv_until(ws: ClientConnection, pred: Callable[[Dict[str, Any]], bool]) -> Dict[str, Any]:
    for _ in range(50):
        frame = recv(ws)
        if pred(frame):
            return frame
    raise AssertionError("the expected frame never came")


@pytest.fixture
def sb(gateway: Gateway) -> Iterator[Client]:
    with Client(gateway.url, api_key=API_KEY, timeout=5) as client:
        yield client


def test_publish_reaches_subscriber_with_offset(gateway: Gateway, sb: Client) -> None:
    topic = unique()
    with open_ws(gateway, "u_pub", topic) as (ws, _):
        first = sb.publish(topic, {"type": "progress_update", "progress": 10})
        second = sb.publish(topic, {"type": "progress_update", "progress": 20})
        assert first["topic"] == topic and first["offset"] == 1
        assert first["results"] == [{"topic": topic, "offset": 1, "epoch": first["epoch"]}]
        assert second["offset"] == 2 and second["epoch"] == first["epoch"]
        got = [recv(ws), recv(ws)]
    assert [(e["topic"], e["offset"], e["progress"]) for e in got] == [
        (topic, 1, 10),
        (topic, 2, 20),
    ]
    assert all(e["type"] == "progress_update" and "timestamp" in e for e in got)


def test_retain_and_topic(gateway: Gateway, sb: Client) -> None:
    topic = unique()
    empty = sb.topic(topic)
    assert empty["topic"] == topic and empty["offset"] == 0 and empty["state"] is None
    sb.publish(topic, {"type": "stage_complete", "stage": "fetch"}, retain=True)
    sb.publish(topic, {"type": "progress_update", "progress": 50})
    with open_ws(gateway, "u_ret", topic) as (ws, _):
        retained = recv(ws)  # a fresh subscribe is followed by the retained state
        assert retained["retained"] is True and retained["stage"] == "fetch"
        info = sb.topic(topic)
    assert info["offset"] == 2 and info["subscribers"] == 1
    assert info["state"] is not None
    assert info["state"]["type"] == "stage_complete" and info["state"]["offset"] == 1


def test_topic_with_slash_is_encoded(sb: Client) -> None:
    topic = unique("files") + "/report=1"
    sb.publish(topic, {"type": "written"}, retain=True)
    info = sb.topic(topic)
    assert info["topic"] == topic and info["offset"] == 1
    assert sb.history(topic)["events"][0]["type"] == "written"


def test_history_since_and_limit(sb: Client) -> None:
    topic = unique()
    for i in range(1, 6):
        sb.publish(topic, {"type": "progress_update", "progress": i * 20})
    whole = sb.history(topic)
    assert [e["offset"] for e in whole["events"]] == [1, 2, 3, 4, 5]
    assert whole["offset"] == 5 and whole["recovered"] is True
    page = sb.history(topic, since=1, limit=2)
    assert [e["offset"] for e in page["events"]] == [2, 3]
    assert page["offset"] == 5 and page["topic"] == topic
    # page forward until `offset` is reached
    since, seen = 0, []
    while since < whole["offset"]:
        events = sb.history(topic, since=since, limit=2)["events"]
        seen += [e["offset"] for e in events]
        since = events[-1]["offset"]
    assert seen == [1, 2, 3, 4, 5]
    other_epoch = sb.history(topic, since=3, epoch="not-the-epoch")
    assert other_epoch["recovered"] is False


def test_presence(gateway: Gateway, sb: Client) -> None:
    topic = unique()
    assert sb.presence(topic) == {"type": "presence", "topic": topic, "users": [], "connections": 0}
    with open_ws(gateway, "alice", topic) as (ws1, _), open_ws(gateway, "bob", topic) as (ws2, _):
        p = sb.presence(topic)
    assert sorted(p["users"]) == ["alice", "bob"] and p["connections"] == 2


def test_connections_filtered(gateway: Gateway, sb: Client) -> None:
    topic = unique()
    user = unique("user").split(":")[1]
    with open_ws(gateway, user, topic) as (ws1, hello1), open_ws(gateway, user + "_other") as (
        ws2,
        hello2,
    ):
        mine = sb.connections(user=user)["connections"]
        assert [c["connectionId"] for c in mine] == [hello1["connectionId"]]
        c = mine[0]
        assert c["userId"] == user and c["protocol"] == "native"
        assert set(c["topics"]) == {topic, f"user:{user}", "global"}
        by_topic = sb.connections(topic=topic)["connections"]
        assert [c["connectionId"] for c in by_topic] == [hello1["connectionId"]]
        both = sb.connections(user=user + "_other", topic=topic)["connections"]
        assert both == []
        everyone = {c["connectionId"] for c in sb.connections()["connections"]}
        assert {hello1["connectionId"], hello2["connectionId"]} <= everyone


def test_send_then_disconnect(gateway: Gateway, sb: Client) -> None:
    with open_ws(gateway, "u_send") as (ws, hello):
        cid = hello["connectionId"]
        event = {"type": "direct", "text": "hello", "n": 1}
        assert sb.send(cid, event) == {"delivered": True}
        assert recv(ws) == event  # exactly as given: no topic, offset or timestamp
        assert sb.disconnect(cid) is None
        with pytest.raises(ConnectionClosed) as closed:
            recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    with pytest.raises(SignalboxError) as gone:
        sb.disconnect(cid)
    assert gone.value.code == "NOT_FOUND" and gone.value.status == 404


def test_broadcast(gateway: Gateway, sb: Client) -> None:
    with open_ws(gateway, "u_bc") as (ws, _):
        result = sb.broadcast({"type": "maintenance", "at": "02:00"})
        assert result["topic"] == "global" and result["offset"] >= 1
        got = recv_until(ws, lambda f: f.get("type") == "maintenance")
    assert got["topic"] == "global" and got["offset"] == result["offset"]


def test_publish_batch(gateway: Gateway, sb: Client) -> None:
    topic, other = unique(), unique()
    with open_ws(gateway, "u_batch", topic) as (ws, _):
        answer = sb.publish_batch(
            [
                {"topic": topic, "event": {"type": "progress_update", "progress": 10}},
                {"topic": "job:*", "event": {"type": "bad_topic"}},
                {"topic": topic, "event": {"no": "type"}},
                {"topics": [topic, other], "event": {"type": "done"}, "retain": True},
            ]
        )
        results = answer["results"]
        assert results[0] == {"topic": topic, "offset": 1, "epoch": results[0]["epoch"]}
        assert results[1]["error"]["code"] == "VALIDATION_ERROR"
        assert results[2]["error"]["code"] == "VALIDATION_ERROR"
        assert [(r["topic"], r["offset"]) for r in results[3]["results"]] == [
            (topic, 2),
            (other, 1),
        ]
        got = [recv(ws), recv(ws)]
    assert [(e["type"], e["offset"]) for e in got] == [("progress_update", 1), ("done", 2)]
    assert sb.topic(other)["state"]["type"] == "done"


def test_wrong_api_key(gateway: Gateway) -> None:
    with Client(gateway.url, api_key="not-the-key") as bad:
        with pytest.raises(SignalboxError) as err:
            bad.topic("job:1")
    assert err.value.code == "AUTHENTICATION_ERROR" and err.value.status == 401
    assert err.value.message == "invalid API key"


def test_server_side_errors(sb: Client) -> None:
    with pytest.raises(SignalboxError) as bad_topic:
        sb.publish("job:*", {"type": "x"})
    assert bad_topic.value.code == "VALIDATION_ERROR" and bad_topic.value.status == 400
    assert "invalid topic" in bad_topic.value.message
    with pytest.raises(SignalboxError) as bad_limit:
        sb.history(unique(), limit=5000)
    assert bad_limit.value.status == 400
    with pytest.raises(SignalboxError) as unknown:
        sb.send("conn_0_doesnotexist", {"type": "x"})
    assert unknown.value.code == "NOT_FOUND" and unknown.value.status == 404
    assert unknown.value.body == {"error": {"code": "NOT_FOUND", "message": unknown.value.message}}


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.publish("", {"type": "x"}),
        lambda c: c.publish(42, {"type": "x"}),
        lambda c: c.publish("job:1", {"progress": 1}),
        lambda c: c.publish("job:1", {"type": ""}),
        lambda c: c.publish("job:1", ["type"]),
        lambda c: c.publish("job:1", {"type": "x"}, retain="yes"),
        lambda c: c.publish("job:1", {"type": "x", "bad": object()}),
        lambda c: c.publish_batch([]),
        lambda c: c.publish_batch(["not a dict"]),
        lambda c: c.publish_batch({"topic": "job:1", "event": {"type": "x"}}),
        lambda c: c.broadcast({"no": "type"}),
        lambda c: c.history("job:1", since=-1),
        lambda c: c.history("job:1", limit=0),
        lambda c: c.send("", {"type": "x"}),
        lambda c: c.disconnect(None),
    ],
)
def test_client_side_validation_sends_nothing(call: Callable[[Client], Any]) -> None:
    # Port 9 (discard) on loopback refuses: any request would be a CONNECTION_ERROR.
    with Client("http://127.0.0.1:9", retries=0) as offline:
        with pytest.raises(SignalboxError) as err:
            call(offline)
    assert err.value.code == "VALIDATION_ERROR" and err.value.status is None


def test_non_json_answer(gateway: Gateway) -> None:
    # Outside /api the gateway answers 404 with an empty body: not the API's error JSON.
    with Client(gateway.url + "/not-the-api", api_key=API_KEY) as odd:
        with pytest.raises(SignalboxError) as err:
            odd.topic("job:1")
    assert err.value.code == "UNEXPECTED_RESPONSE" and err.value.status == 404


def test_connection_error_is_a_signalbox_error() -> None:
    with Client("http://127.0.0.1:9", retries=0) as offline:
        with pytest.raises(SignalboxError) as err:
            offline.topic("job:1")
    assert err.value.code == "CONNECTION_ERROR" and err.value.status is None
