"""The one exception type the client raises."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["SignalboxError"]

#: Raised before any request when an argument is malformed.
VALIDATION_ERROR = "VALIDATION_ERROR"
#: The gateway could not be reached, or the connection broke before an answer came.
CONNECTION_ERROR = "CONNECTION_ERROR"
#: The gateway did not answer within the client's timeout.
TIMEOUT = "TIMEOUT"
#: The answer was not the JSON the API documents (e.g. an HTML page from a proxy).
UNEXPECTED_RESPONSE = "UNEXPECTED_RESPONSE"


class SignalboxError(Exception):
    """An error from the gateway, from the network, or from client-side validation.

    Attributes:
        code: The gateway's error code (``VALIDATION_ERROR``, ``AUTHENTICATION_ERROR``,
            ``NOT_FOUND``, ``PAYLOAD_TOO_LARGE``, ``BROKER_UNAVAILABLE``,
            ``INTERNAL_ERROR``, ...), or one of the client's own codes:
            ``VALIDATION_ERROR`` (raised before any request; ``status`` is ``None``),
            ``CONNECTION_ERROR``, ``TIMEOUT`` (no HTTP answer; ``status`` is ``None``) and
            ``UNEXPECTED_RESPONSE`` (an answer that is not the API's JSON).
        status: The HTTP status of the answer, or ``None`` when there was no answer.
        message: The human-readable message (the gateway's ``error.message`` when there
            is one).
        body: The decoded error body, or the raw text of a non-JSON answer, or ``None``.
    """

    code: str
    status: Optional[int]
    message: str
    body: Any

    def __init__(
        self, code: str, message: str, status: Optional[int] = None, body: Any = None
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.body = body

    def __repr__(self) -> str:
        return (
            f"SignalboxError(code={self.code!r}, status={self.status!r}, "
            f"message={self.message!r})"
        )
