"""Retries on 503 BROKER_UNAVAILABLE: a gateway on the Redis broker whose Redis is killed
and started again (on the same port) mid-call."""

from __future__ import annotations

import asyncio
import time
from typing import Tuple

import pytest

from conftest import API_KEY, Gateway, Redis
from signalbox_client import AsyncClient, Client, SignalboxError

RESTART_AFTER = 1.5
RETRY = dict(retries=40, backoff=0.05, max_backoff=0.3, retry_deadline=20.0)


def test_get_retried_on_503_and_publish_not(redis_gateway: Tuple[Redis, Gateway]) -> None:
    redis, gw = redis_gateway
    with Client(gw.url, api_key=API_KEY, timeout=5, **RETRY) as sb:
        sb.publish("job:b1", {"type": "progress_update", "progress": 1})
        redis.stop()
        with pytest.raises(SignalboxError) as err:
            sb.publish("job:b1", {"type": "progress_update", "progress": 2})
        assert err.value.code == "BROKER_UNAVAILABLE" and err.value.status == 503
        restarted = redis.restart_later(RESTART_AFTER)
        start = time.monotonic()
        info = sb.topic("job:b1")  # 503 until Redis is back, then answered
        assert time.monotonic() - start >= RESTART_AFTER * 0.5
        restarted.join()
        assert info["topic"] == "job:b1"


def test_batch_retries_only_broker_unavailable_items(redis_gateway: Tuple[Redis, Gateway]) -> None:
    redis, gw = redis_gateway
    with Client(gw.url, api_key=API_KEY, timeout=5, **RETRY) as sb:
        redis.stop()
        restarted = redis.restart_later(RESTART_AFTER)
        answer = sb.publish_batch(
            [
                {"topic": "job:b2", "event": {"type": "progress_update", "progress": 10}},
                {"topic": "job:b2", "event": {"progress": 20}},  # invalid: never retried
                {"topic": "job:b2", "event": {"type": "job_complete"}, "retain": True},
                # several topics: a retry could repeat the event on the ones that stand
                {"topics": ["job:b2", "user:u1"], "event": {"type": "multi"}},
            ]
        )
        restarted.join()
        results = answer["results"]
        assert [r.get("offset") for r in results[:1] + results[2:3]] == [1, 2]
        assert results[1]["error"]["code"] == "VALIDATION_ERROR"
        assert results[3]["error"]["code"] == "BROKER_UNAVAILABLE"
        events = sb.history("job:b2")["events"]
        assert [e["type"] for e in events] == ["progress_update", "job_complete"]
        assert sb.topic("job:b2")["state"]["type"] == "job_complete"


def test_async_batch_and_get_on_503(redis_gateway: Tuple[Redis, Gateway]) -> None:
    redis, gw = redis_gateway

    async def scenario() -> None:
        async with AsyncClient(
            gw.url, api_key=API_KEY, timeout=5, retry_publish=True, **RETRY
        ) as sb:
            redis.stop()
            restarted = redis.restart_later(RESTART_AFTER)
            answer = await sb.publish_batch(
                [
                    {"topic": "job:b3", "event": {"type": "a"}},
                    {"topics": ["job:b3", "job:b4"], "event": {"type": "b"}},
                ]
            )
            assert [r.get("offset") for r in answer["results"][:1]] == [1]
            assert [(r["topic"], r["offset"]) for r in answer["results"][1]["results"]] == [
                ("job:b3", 2),
                ("job:b4", 1),
            ]
            await asyncio.to_thread(restarted.join)
            redis.stop()
            restarted = redis.restart_later(RESTART_AFTER)
            presence = await sb.presence("job:b3")
            assert presence["connections"] == 0
            await asyncio.to_thread(restarted.join)

    asyncio.run(asyncio.wait_for(scenario(), 40))
