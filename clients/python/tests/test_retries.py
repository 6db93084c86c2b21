"""Retries against a real gateway that is killed and started again on the same port."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from conftest import API_KEY, Gateway
from signalbox_client import AsyncClient, Client, SignalboxError

RESTART_AFTER = 1.0
# Enough attempts and time to outlast the restart; full jitter keeps each wait short.
RETRY = dict(retries=30, backoff=0.05, max_backoff=0.25, retry_deadline=20.0)


def test_get_is_retried_until_the_gateway_answers(own_gateway: Gateway) -> None:
    with Client(own_gateway.url, api_key=API_KEY, timeout=5, **RETRY) as sb:
        assert sb.topic("job:r1")["offset"] == 0  # a keep-alive connection is now pooled
        own_gateway.stop()
        restarted = own_gateway.restart_later(RESTART_AFTER)
        start = time.monotonic()
        info = sb.topic("job:r1")
        elapsed = time.monotonic() - start
        restarted.join()
    assert info["topic"] == "job:r1"
    assert elapsed >= RESTART_AFTER * 0.9  # it did wait for the restart


def test_publish_is_not_retried_unless_opted_in(own_gateway: Gateway) -> None:
    with Client(own_gateway.url, api_key=API_KEY, timeout=5, **RETRY) as sb:
        sb.publish("job:r2", {"type": "progress_update", "progress": 1})
        own_gateway.stop()
        restarted = own_gateway.restart_later(RESTART_AFTER)
        start = time.monotonic()
        with pytest.raises(SignalboxError) as err:
            sb.publish("job:r2", {"type": "progress_update", "progress": 2})
        elapsed = time.monotonic() - start
        restarted.join()
        assert err.value.code == "CONNECTION_ERROR" and err.value.status is None
        assert elapsed < RESTART_AFTER / 2  # failed fast, no waiting for the restart
        # The same client works again once the gateway is back.
        assert sb.publish("job:r2", {"type": "progress_update", "progress": 3})["offset"] == 1


def test_opted_in_publish_is_retried(own_gateway: Gateway) -> None:
    with Client(own_gateway.url, api_key=API_KEY, timeout=5, retry_publish=True, **RETRY) as sb:
        own_gateway.stop()
        restarted = own_gateway.restart_later(RESTART_AFTER)
        result = sb.publish("job:r3", {"type": "progress_update", "progress": 1})
        restarted.join()
        assert result["offset"] == 1
        assert len(sb.history("job:r3")["events"]) == 1


def test_retries_are_bounded_in_time(own_gateway: Gateway) -> None:
    own_gateway.stop()
    with Client(
        own_gateway.url,
        api_key=API_KEY,
        retries=1000,
        backoff=0.05,
        max_backoff=0.1,
        retry_deadline=0.5,
    ) as sb:
        start = time.monotonic()
        with pytest.raises(SignalboxError) as err:
            sb.connections()
        elapsed = time.monotonic() - start
    assert err.value.code == "CONNECTION_ERROR"
    assert 0.3 <= elapsed < 1.5


def test_retries_are_bounded_in_attempts(own_gateway: Gateway) -> None:
    own_gateway.stop()
    with Client(own_gateway.url, api_key=API_KEY, retries=0, retry_deadline=30) as sb:
        start = time.monotonic()
        with pytest.raises(SignalboxError) as err:
            sb.disconnect("conn_1_x")
    assert err.value.code == "CONNECTION_ERROR" and time.monotonic() - start < 0.5


def test_async_get_retried_and_publish_fails_fast(own_gateway: Gateway) -> None:
    async def scenario() -> None:
        async with AsyncClient(own_gateway.url, api_key=API_KEY, timeout=5, **RETRY) as sb:
            await sb.presence("job:r4")
            own_gateway.stop()
            start = time.monotonic()
            with pytest.raises(SignalboxError) as err:
                await sb.publish("job:r4", {"type": "x"})
            assert err.value.code == "CONNECTION_ERROR"
            assert time.monotonic() - start < RESTART_AFTER / 2
            restarted = own_gateway.restart_later(RESTART_AFTER)
            start = time.monotonic()
            history = await sb.history("job:r4")
            assert time.monotonic() - start >= RESTART_AFTER * 0.5
            assert history["events"] == []
            await asyncio.to_thread(restarted.join)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_timeout_is_a_signalbox_error_and_retried_within_bounds() -> None:
    # A listener that accepts connections and never answers (the kernel completes the
    # handshake from the backlog): every request times out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = "http://127.0.0.1:%d" % silent.getsockname()[1]
        with Client(url, api_key=API_KEY, timeout=0.2, retries=0) as sb:
            with pytest.raises(SignalboxError) as err:
                sb.topic("job:t")
        assert err.value.code == "TIMEOUT" and err.value.status is None
        with Client(url, api_key=API_KEY, timeout=0.2, retries=2, backoff=0.01) as sb:
            start = time.monotonic()
            with pytest.raises(SignalboxError) as err:
                sb.history("job:t")
            elapsed = time.monotonic() - start
        assert err.value.code == "TIMEOUT"
        assert 0.55 <= elapsed < 2.0  # three attempts of 0.2 s each
