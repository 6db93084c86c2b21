"""The synchronous client."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, cast

import httpx

from . import _core
from ._core import Backoff, Call, TimeoutArg
from ._errors import SignalboxError
from .types import (
    BatchItem,
    BatchResponse,
    ConnectionList,
    Event,
    History,
    Presence,
    PublishResponse,
    SendResult,
    TopicInfo,
)

__all__ = ["Client"]

_JSON = {"Content-Type": "application/json"}


class Client:
    """A synchronous client of the gateway's backend HTTP API.

    One ``httpx.Client`` (a keep-alive connection pool) serves every call; use the client
    as a context manager, or call :meth:`close`, to release it::

        with Client("http://127.0.0.1:8080", api_key="change-me-api-key-1") as sb:
            sb.publish("job:job_42", {"type": "progress_update", "progress": 40})

    Retries: reads (``topic``, ``history``, ``presence``, ``connections``) and
    ``disconnect`` are retried on a ``503`` answer and when no answer came (connection
    refused or broken, timeout), with exponential backoff and full jitter, at most
    ``retries`` times and never past ``retry_deadline`` seconds after the first attempt.
    ``publish``, ``broadcast`` and ``send`` are **not** retried unless
    ``retry_publish=True``: when a request fails without an answer the gateway may
    already have published (or sent) the event, so repeating it could deliver it twice;
    and a ``503`` from a multi-topic publish means the topics before the failure stand
    published. ``publish_batch`` retries the items whose result is ``BROKER_UNAVAILABLE``
    (see :meth:`publish_batch`).

    Args:
        url: The gateway's base URL, e.g. ``http://127.0.0.1:8080``.
        api_key: One of the gateway's API keys (``SIGNALBOX_API_KEYS``); ``None`` only
            for a gateway in ``--dev`` mode.
        timeout: Per-request timeout in seconds (or an ``httpx.Timeout``); default 10 s.
        retries: Retries after the first attempt, for the calls that may be retried
            (0 turns retries off); default 3.
        backoff: The first retry waits up to this many seconds; each further retry up to
            twice as long as the previous one (default 0.1).
        max_backoff: The longest wait between two attempts (default 2.0).
        retry_deadline: No retry starts after this many seconds since the first attempt
            (default 15.0).
        retry_publish: Also retry ``publish``, ``broadcast``, ``send`` and the whole of a
            batch whose request got no answer, accepting that an event may then be
            delivered twice (default ``False``).
        headers: Extra headers for every request.
    """

    def __init__(
        self,
        url: str,
        api_key: Optional[str] = None,
        *,
        timeout: TimeoutArg = _core.DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        retry_deadline: float = 15.0,
        retry_publish: bool = False,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        retries, backoff, max_backoff, retry_deadline = _core.check_retry_settings(
            retries, backoff, max_backoff, retry_deadline
        )
        self.url = _core.base_url(url)
        self.retries = retries
        self.retry_publish = _core.check_bool(retry_publish, "retry_publish")
        self._backoff = Backoff(retries, backoff, max_backoff, retry_deadline)
        self._http = httpx.Client(
            base_url=self.url,
            headers=_core.client_headers(api_key, headers),
            timeout=timeout,
        )

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------

    def _once(self, call: Call) -> Any:
        content = _core.encode_json(call.json) if call.json is not None else None
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                content=content,
                headers=_JSON if content is not None else None,
            )
        except httpx.RequestError as exc:
            raise _core.transport_error(exc) from exc
        return _core.parse_response(response, call.no_content)

    def _run(self, call: Call, retry: Optional[bool] = None) -> Any:
        may_retry = call.idempotent if retry is None else retry
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return self._once(call)
            except SignalboxError as error:
                if not may_retry or not _core.retryable(error) or attempt >= self.retries:
                    raise
                delay = self._backoff.delay(attempt)
                if time.monotonic() - start + delay > self._backoff.deadline:
                    raise
            time.sleep(delay)
            attempt += 1

    # --- publishing ---------------------------------------------------------------------

    def publish(self, topic: str, event: Event, retain: bool = False) -> PublishResponse:
        """Publish one event to one topic (``POST /api/publish``).

        Args:
            topic: The topic, e.g. ``"job:job_42"``.
            event: A dict with a non-empty string ``type``; subscribers receive it with
                ``topic``, ``offset`` and (unless given) ``timestamp`` added.
            retain: Also store the event as the topic's retained state.

        Returns:
            ``{"topic", "offset", "epoch", "results": [{"topic", "offset", "epoch"}]}``.

        Not retried unless the client was made with ``retry_publish=True``: a request
        that got no answer may have been published already, and publishing it again
        would deliver the event twice.

        Raises:
            SignalboxError: ``VALIDATION_ERROR`` (before any request for a malformed
                argument; ``400`` for a topic the gateway refuses), and any error of the
                gateway or the network.
        """
        return cast(
            PublishResponse,
            self._run(_core.publish_call(topic, event, retain), self.retry_publish),
        )

    def broadcast(self, event: Event, retain: bool = False) -> PublishResponse:
        """Publish one event to ``global``, which every connection holds
        (``POST /api/broadcast``). Retried only with ``retry_publish=True``, as
        :meth:`publish`."""
        return cast(
            PublishResponse, self._run(_core.broadcast_call(event, retain), self.retry_publish)
        )

    def publish_batch(self, items: Sequence[BatchItem]) -> BatchResponse:
        """Publish many events in one request, in order (``POST /api/publish/batch``).

        Args:
            items: 1 to 1000 dicts, each with ``topic`` (or ``topics``), ``event`` and
                optionally ``retain``, e.g. ``{"topic": "job:1", "event": {"type": "x"}}``.

        Returns:
            ``{"results": [...]}``, one entry per item in the items' order:
            ``{"topic", "offset", "epoch"}``, ``{"results": [...]}`` for a ``topics``
            item, or ``{"error": {"code", "message"}}`` for an item that was invalid or
            whose publish failed. A bad item does not fail the others, and item errors
            are returned, not raised: the client checks only that ``items`` is a
            non-empty list of dicts and leaves each item's fields to the gateway.

        The items whose result is ``BROKER_UNAVAILABLE`` are sent again (only those, in
        a smaller batch, with the same backoff and bounds as the other retries) and
        their results replaced by the new ones; an item with several ``topics`` only
        with ``retry_publish=True``, since the topics before its failure stand
        published. A retried item comes after the batch's other items in its topic's
        order. If a retry gets no answer, its items' results become ``CONNECTION_ERROR``
        (or ``TIMEOUT``) item errors (they may or may not be published) unless
        ``retry_publish=True``.

        The first request itself is retried only with ``retry_publish=True``.
        """
        checked = _core.batch_items(items)
        response = cast(Dict[str, Any], self._run(_core.batch_call(checked), self.retry_publish))
        results: List[Any] = list(response.get("results", []))
        if len(results) != len(checked):
            return cast(BatchResponse, response)
        start = time.monotonic()
        pending = _core.failed_batch_items(
            checked, results, range(len(checked)), self.retry_publish
        )
        attempt = 0
        while pending and attempt < self.retries:
            delay = self._backoff.delay(attempt)
            if time.monotonic() - start + delay > self._backoff.deadline:
                break
            time.sleep(delay)
            attempt += 1
            try:
                again = self._once(_core.batch_call([checked[i] for i in pending]))
            except SignalboxError as error:
                if not _core.retryable(error):
                    raise
                if error.status is None and not self.retry_publish:
                    for i in pending:
                        results[i] = _core.item_error(error)
                    break
                continue
            for i, result in zip(pending, again.get("results", [])):
                results[i] = result
            pending = _core.failed_batch_items(checked, results, pending, self.retry_publish)
        response["results"] = results
        return cast(BatchResponse, response)

    # --- topics -------------------------------------------------------------------------

    def topic(self, topic: str) -> TopicInfo:
        """A topic's subscribers (on the answering node), last offset, epoch and retained
        state (``GET /api/topics/{topic}``). Any valid topic answers, used or not.
        Retried on 503 and connection errors."""
        return cast(TopicInfo, self._run(_core.topic_call(topic)))

    def history(
        self,
        topic: str,
        since: Optional[int] = None,
        limit: Optional[int] = None,
        *,
        epoch: Optional[str] = None,
    ) -> History:
        """The events after ``since`` still in the topic's history, oldest first
        (``GET /api/topics/{topic}/history``).

        Args:
            topic: The topic.
            since: The last offset the caller has (default 0: from the start).
            limit: At most this many events, 1 to 1000 (the gateway's default is 100).
            epoch: The epoch ``since`` belongs to; if the topic's epoch differs,
                ``recovered`` is ``False`` and the whole current history is returned.

        Returns:
            ``{"topic", "epoch", "offset", "recovered", "events"}``; page forward by
            calling again with ``since`` set to the last returned offset until it
            reaches ``offset``. Retried on 503 and connection errors.
        """
        return cast(History, self._run(_core.history_call(topic, since, limit, epoch)))

    def presence(self, topic: str) -> Presence:
        """Who is subscribed to the topic: ``{"type": "presence", "topic", "users",
        "connections"}`` (``GET /api/topics/{topic}/presence``). Retried on 503 and
        connection errors."""
        return cast(Presence, self._run(_core.presence_call(topic)))

    # --- connections --------------------------------------------------------------------

    def connections(
        self, user: Optional[str] = None, topic: Optional[str] = None
    ) -> ConnectionList:
        """The open connections, oldest first, optionally only a user's and/or only those
        holding a topic (``GET /api/connections``). Retried on 503 and connection
        errors."""
        return cast(ConnectionList, self._run(_core.connections_call(user, topic)))

    def send(self, connection_id: str, event: Event) -> SendResult:
        """Send one event to one connection, outside any topic
        (``POST /api/connections/{id}/send``).

        Returns:
            ``{"delivered": True}``, or ``{"delivered": False}`` when the connection's
            send queue was full (the gateway then closes it with 4008).

        Raises:
            SignalboxError: ``NOT_FOUND`` (404) if the connection does not exist or is
                closing. Not retried unless ``retry_publish=True`` (a resend could
                deliver the event twice).
        """
        return cast(
            SendResult, self._run(_core.send_call(connection_id, event), self.retry_publish)
        )

    def disconnect(self, connection_id: str) -> None:
        """Close one connection (``DELETE /api/connections/{id}``): the client receives
        its queued frames, then close code 1000.

        Raises:
            SignalboxError: ``NOT_FOUND`` (404) if the connection does not exist or is
                already closing (also when a retry follows an attempt that did close it
                but whose answer was lost). Retried on 503 and connection errors.
        """
        self._run(_core.disconnect_call(connection_id))
