"""Python backend client for the Signalbox real-time WebSocket gateway.

``Client`` (synchronous) and ``AsyncClient`` (asyncio) call the gateway's backend HTTP API:
publish, batch publish, broadcast, topic info, history, presence, connections, send and
disconnect. Every failure is a :class:`SignalboxError` with ``.code``, ``.status`` and
``.message``.
"""

from ._errors import SignalboxError
from .async_client import AsyncClient
from .client import Client
from .types import (
    BatchItem,
    BatchResponse,
    Connection,
    ConnectionList,
    Event,
    History,
    Presence,
    PublishResponse,
    PublishResult,
    SendResult,
    TopicInfo,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BatchItem",
    "BatchResponse",
    "Client",
    "Connection",
    "ConnectionList",
    "Event",
    "History",
    "Presence",
    "PublishResponse",
    "PublishResult",
    "SendResult",
    "SignalboxError",
    "TopicInfo",
    "__version__",
]
