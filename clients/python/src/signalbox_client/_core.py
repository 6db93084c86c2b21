"""What the sync and the async client share: validation, request shapes, answers, backoff."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import httpx

from ._errors import (
    CONNECTION_ERROR,
    TIMEOUT,
    UNEXPECTED_RESPONSE,
    VALIDATION_ERROR,
    SignalboxError,
)

DEFAULT_TIMEOUT = 10.0
USER_AGENT = "signalbox-client-python/0.1.0"

#: The batch item error code that ``publish_batch`` retries.
BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"


@dataclass(frozen=True)
class Call:
    """One API request, and whether repeating it is harmless."""

    method: str
    path: str
    json: Any = None
    params: Optional[Dict[str, Any]] = None
    idempotent: bool = False
    no_content: bool = False


@dataclass
class Backoff:
    """Exponential backoff with full jitter, bounded in attempts and total time.

    The n-th retry waits a random time in ``[0, min(max_delay, base_delay * 2**n)]``, and
    no retry starts once ``deadline`` seconds have passed since the first attempt.
    """

    retries: int
    base_delay: float
    max_delay: float
    deadline: float
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, retry: int) -> float:
        """The time to wait before retry number ``retry`` (0-based)."""
        cap = min(self.max_delay, self.base_delay * (2**retry))
        return self.rng.uniform(0, cap)


def validation_error(message: str) -> SignalboxError:
    return SignalboxError(VALIDATION_ERROR, message)


def check_topic(topic: Any, what: str = "topic") -> str:
    if not isinstance(topic, str) or not topic:
        raise validation_error(f"{what} must be a non-empty string, got {topic!r}")
    return topic


def check_event(event: Any, what: str = "event") -> Dict[str, Any]:
    if not isinstance(event, Mapping):
        raise validation_error(f"{what} must be a dict, got {type(event).__name__}")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise validation_error(f"{what} must have a non-empty string field `type`")
    return dict(event)


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise validation_error(f"{what} must be a bool, got {value!r}")
    return value


def check_offset(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise validation_error(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_connection_id(connection_id: Any) -> str:
    if not isinstance(connection_id, str) or not connection_id:
        raise validation_error(f"connection_id must be a non-empty string, got {connection_id!r}")
    return connection_id


def check_item(item: Any, index: int) -> Dict[str, Any]:
    """A batch item must be a dict; its fields are the gateway's to judge, item by item
    (a bad item gets its own error result and never fails the others)."""
    if not isinstance(item, Mapping):
        raise validation_error(f"items[{index}] must be a dict, got {type(item).__name__}")
    return dict(item)


def topic_path(topic: str) -> str:
    """A topic as one path segment (``/`` becomes ``%2F``)."""
    return quote(topic, safe=":@=")


# --- the calls --------------------------------------------------------------------------


def publish_call(topic: Any, event: Any, retain: Any) -> Call:
    body: Dict[str, Any] = {"topic": check_topic(topic), "event": check_event(event)}
    if check_bool(retain, "retain"):
        body["retain"] = True
    return Call("POST", "/api/publish", json=body)


def broadcast_call(event: Any, retain: Any) -> Call:
    body: Dict[str, Any] = {"event": check_event(event)}
    if check_bool(retain, "retain"):
        body["retain"] = True
    return Call("POST", "/api/broadcast", json=body)


def batch_items(items: Any) -> List[Dict[str, Any]]:
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise validation_error("items must be a list of dicts")
    if not items:
        raise validation_error("items must not be empty")
    return [check_item(item, i) for i, item in enumerate(items)]


def batch_call(items: List[Dict[str, Any]]) -> Call:
    return Call("POST", "/api/publish/batch", json={"events": items})


def topic_call(topic: Any) -> Call:
    return Call("GET", f"/api/topics/{topic_path(check_topic(topic))}", idempotent=True)


def presence_call(topic: Any) -> Call:
    return Call("GET", f"/api/topics/{topic_path(check_topic(topic))}/presence", idempotent=True)


def history_call(topic: Any, since: Any, limit: Any, epoch: Any) -> Call:
    params: Dict[str, Any] = {}
    if since is not None:
        params["since"] = check_offset(since, "since", 0)
    if limit is not None:
        params["limit"] = check_offset(limit, "limit", 1)
    if epoch is not None:
        if not isinstance(epoch, str) or not epoch:
            raise validation_error(f"epoch must be a non-empty string, got {epoch!r}")
        params["epoch"] = epoch
    return Call(
        "GET",
        f"/api/topics/{topic_path(check_topic(topic))}/history",
        params=params or None,
        idempotent=True,
    )


def connections_call(user: Any, topic: Any) -> Call:
    params: Dict[str, Any] = {}
    if user is not None:
        if not isinstance(user, str) or not user:
            raise validation_error(f"user must be a non-empty string, got {user!r}")
        params["user"] = user
    if topic is not None:
        params["topic"] = check_topic(topic)
    return Call("GET", "/api/connections", params=params or None, idempotent=True)


def send_call(connection_id: Any, event: Any) -> Call:
    cid = quote(check_connection_id(connection_id), safe="")
    return Call("POST", f"/api/connections/{cid}/send", json={"event": check_event(event)})


def disconnect_call(connection_id: Any) -> Call:
    cid = quote(check_connection_id(connection_id), safe="")
    return Call("DELETE", f"/api/connections/{cid}", idempotent=True, no_content=True)


# --- answers ----------------------------------------------------------------------------


def transport_error(exc: httpx.HTTPError) -> SignalboxError:
    """A SignalboxError for a request that got no HTTP answer."""
    if isinstance(exc, httpx.TimeoutException):
        return SignalboxError(TIMEOUT, f"no answer in time: {exc!r}")
    return SignalboxError(CONNECTION_ERROR, f"cannot reach the gateway: {exc!r}")


def parse_response(response: httpx.Response, no_content: bool = False) -> Any:
    """The decoded JSON of a success, or the SignalboxError of a failure (raised)."""
    status = response.status_code
    if 200 <= status < 300:
        if no_content or status == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise SignalboxError(
                UNEXPECTED_RESPONSE,
                f"HTTP {status} answer is not JSON: {response.text[:200]!r}",
                status,
                response.text,
            ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        raise SignalboxError(err["code"], str(err.get("message", "")), status, body)
    raise SignalboxError(
        UNEXPECTED_RESPONSE,
        f"HTTP {status} without a Signalbox error body: {response.text[:200]!r}",
        status,
        body if body is not None else response.text,
    )


def retryable(error: SignalboxError) -> bool:
    """503 answers and answers that never came (connection errors, timeouts)."""
    return error.status == 503 or error.code in (CONNECTION_ERROR, TIMEOUT)


def failed_batch_items(
    items: List[Dict[str, Any]], results: List[Any], candidates: Sequence[int], multi: bool
) -> List[int]:
    """Indexes (among ``candidates``) of the batch items to publish again.

    An item qualifies when its result says the broker was unavailable. An item with
    several ``topics`` qualifies only when ``multi`` is true: the gateway reports the
    first failure among its topics, and the topics before it stand published, so sending
    it again would repeat the event on those.
    """
    out = []
    for i in candidates:
        result = results[i]
        err = result.get("error") if isinstance(result, dict) else None
        if not (isinstance(err, dict) and err.get("code") == BROKER_UNAVAILABLE):
            continue
        topics = items[i].get("topics")
        if isinstance(topics, list) and len(topics) > 1 and not multi:
            continue
        out.append(i)
    return out


def item_error(error: SignalboxError) -> Dict[str, Any]:
    """A batch result for items whose retry got no answer: they may or may not be published."""
    return {
        "error": {
            "code": error.code,
            "message": f"{error.message} (retrying this item got no answer: "
            "it may or may not have been published)",
        }
    }


def client_headers(api_key: Optional[str], extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key is not None:
        if not isinstance(api_key, str) or not api_key:
            raise validation_error("api_key must be a non-empty string or None")
        headers["Authorization"] = f"Bearer {api_key}"
    if extra:
        headers.update(extra)
    return headers


def base_url(url: Any) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise validation_error(f"url must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def check_retry_settings(
    retries: Any, backoff: Any, max_backoff: Any, retry_deadline: Any
) -> Tuple[int, float, float, float]:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise validation_error(f"retries must be an integer >= 0, got {retries!r}")
    for name, value in (
        ("backoff", backoff),
        ("max_backoff", max_backoff),
        ("retry_deadline", retry_deadline),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise validation_error(f"{name} must be a number >= 0, got {value!r}")
    return retries, float(backoff), float(max_backoff), float(retry_deadline)


def encode_json(body: Any) -> bytes:
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise validation_error(f"the request body is not JSON-serialisable: {exc}") from None


TimeoutArg = Union[float, httpx.Timeout, None]
