"""Typed shapes of the gateway's JSON answers (see docs/http-api.md).

They are plain ``dict`` objects at run time; the TypedDicts only help type checkers and
editors. Fields the gateway may add later are kept in the dicts as received.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict, Union

__all__ = [
    "Event",
    "PublishResult",
    "PublishResponse",
    "BatchItem",
    "BatchItemError",
    "BatchItemResult",
    "BatchResponse",
    "ErrorBody",
    "TopicInfo",
    "Presence",
    "History",
    "Connection",
    "ConnectionList",
    "SendResult",
]

#: An event: a JSON object with a non-empty string ``type``, e.g.
#: ``{"type": "progress_update", "progress": 40}``.
Event = Dict[str, Any]


class PublishResult(TypedDict):
    """Where one event landed: its topic, its offset in the topic, the topic's epoch."""

    topic: str
    offset: int
    epoch: str


class PublishResponse(TypedDict, total=False):
    """The answer to ``publish`` and ``broadcast``.

    ``results`` is always there, one entry per topic. A single-topic publish also has its
    result copied to the top level (``topic``, ``offset``, ``epoch``).
    """

    topic: str
    offset: int
    epoch: str
    results: List[PublishResult]


class BatchItem(TypedDict, total=False):
    """One item of ``publish_batch``: ``topic`` or ``topics``, ``event``, optional ``retain``."""

    topic: str
    topics: List[str]
    event: Event
    retain: bool


class ErrorBody(TypedDict):
    """``{"code", "message"}`` inside an ``{"error": ...}`` answer or batch result."""

    code: str
    message: str


class BatchItemError(TypedDict):
    """The result of a batch item that was invalid or whose publish failed."""

    error: ErrorBody


class _MultiTopicResult(TypedDict):
    results: List[PublishResult]


#: One entry of ``BatchResponse.results``: a ``PublishResult`` for a ``topic`` item,
#: ``{"results": [...]}`` for a ``topics`` item, or ``{"error": {...}}``.
BatchItemResult = Union[PublishResult, _MultiTopicResult, BatchItemError]


class BatchResponse(TypedDict):
    """The answer to ``publish_batch``: one result per item, in the items' order."""

    results: List[BatchItemResult]


class TopicInfo(TypedDict):
    """The answer to ``topic``: subscribers on the answering node, last offset, epoch, and
    the retained state as delivered (or ``None``)."""

    topic: str
    subscribers: int
    offset: int
    epoch: str
    state: Optional[Dict[str, Any]]


class Presence(TypedDict):
    """The answer to ``presence``: the users subscribed to a topic and their connection count."""

    type: str
    topic: str
    users: List[str]
    connections: int


class History(TypedDict):
    """The answer to ``history``.

    ``offset`` is the topic's last offset; ``recovered`` is ``True`` when no event after
    ``since`` has left history; ``events`` are oldest first, as delivered.
    """

    topic: str
    epoch: str
    offset: int
    recovered: bool
    events: List[Dict[str, Any]]


class Connection(TypedDict):
    """One open connection, as ``connections`` lists it."""

    connectionId: str
    userId: str
    topics: List[str]
    connectedAt: str
    remoteAddr: str
    protocol: str


class ConnectionList(TypedDict):
    """The answer to ``connections``, oldest connection first."""

    connections: List[Connection]


class SendResult(TypedDict):
    """The answer to ``send``: ``delivered`` is ``False`` when the connection's send queue
    was full (the gateway then closes it with 4008)."""

    delivered: bool
