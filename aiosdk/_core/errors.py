"""The one exception hierarchy of aiosdk.

HTTP statuses and gRPC statuses map onto the same classes, so ``except NotFoundError`` works for
both wires. Every status error carries the HTTP-equivalent ``status_code``, the server's
``request_id`` and ``message``, and the decoded error ``body`` when there was one.
"""

from __future__ import annotations

from collections.abc import Mapping

from grpclib.const import Status

__all__ = [
    "AiosdkError",
    "AuthenticationError",
    "BadRequestError",
    "ChannelFullError",
    "ClientClosedError",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "ContinuityLostError",
    "DeadlineExceededError",
    "InternalServerError",
    "IdempotencyInProgressError",
    "InvalidChannelIdError",
    "InvalidTokenError",
    "MalformedTicketError",
    "MessageTooLargeError",
    "MissingDependencyError",
    "NodeNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServerError",
    "ServiceUnavailableError",
    "SessionClosedError",
    "SessionExpiredError",
    "StatusError",
    "TimeoutError",
    "TokenTimedOutError",
    "TransportError",
    "UnprocessableEntityError",
    "UnsupportedBackendError",
    "WatchGapError",
    "error_for_grpc_status",
    "error_for_http_status",
]


class AiosdkError(Exception):
    """Base class of every error aiosdk raises."""


class ConfigurationError(AiosdkError, ValueError):
    """The client was configured in a way that cannot work (no URL, unknown profile, bad retry
    mode, a token with a control character, ...), or a request the client itself cannot send.

    Never retried: it would fail the same way every time. A ``ValueError`` too.
    """


class ClientClosedError(AiosdkError, RuntimeError):
    """The client (or the pool it shares with :meth:`~aiosdk.AsyncClient.with_options` twins)
    was closed; make a new one."""


class SessionClosedError(AiosdkError, RuntimeError):
    """The ticket session was closed (or never opened): open a new one with
    :meth:`~aiosdk.AsyncClient.session`."""


class MalformedTicketError(AiosdkError, ValueError):
    """Bytes that are no ticket, or no ticket of the class asked for (an export ticket given to
    :class:`~aiosdk.ScopeTicket`); the message names the problem. A ``ValueError`` too."""


class InvalidChannelIdError(AiosdkError, ValueError):
    """A channel's client id the server would refuse, found before any request: not a ``str``,
    empty, longer than 64 bytes of UTF-8, or with a control character. A ``ValueError`` too."""


class MissingDependencyError(AiosdkError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the
    extra that brings it (``pip install 'aiosdk[dataframe]'``). An ``ImportError`` too."""


class UnsupportedBackendError(AiosdkError):
    """The feature needs an async backend other than the running one (gRPC needs asyncio)."""


class TransportError(AiosdkError):
    """The request could not be completed on the network: nothing usable came back.

    ``request_sent`` is False when the request certainly never reached the server (no connection,
    no pooled connection free), which makes even a non-idempotent call safe to retry.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class ConnectError(TransportError):
    """No connection could be made to the server."""


class ProtocolError(TransportError):
    """The connection broke or the peer spoke the protocol wrongly."""


class TimeoutError(TransportError):
    """One attempt timed out (connect, read, write or waiting for a pooled connection)."""


class DeadlineExceededError(TimeoutError):
    """The call's overall deadline, which bounds every attempt and backoff sleep, passed."""


class StatusError(AiosdkError):
    """The server answered with an error status.

    Attributes:
        status_code: the HTTP status, or the HTTP equivalent of the gRPC status.
        grpc_status: the gRPC status name when the error came over gRPC, else ``None``.
        request_id: the server's request id, for support and logs.
        message: the server's own explanation.
        body: the decoded error body (HTTP), if any.
        retry_after: the wait in seconds the server asked for (``Retry-After``), if any.
    """

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        body: object = None,
        grpc_status: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        if status_code is not None:
            self.status_code = status_code
        self.message = message
        self.request_id = request_id
        self.body = body
        self.grpc_status = grpc_status
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        where = f"gRPC {self.grpc_status}" if self.grpc_status else f"HTTP {self.status_code}"
        rid = f", request id {self.request_id}" if self.request_id else ""
        return f"{self.message} ({where}{rid})"


class BadRequestError(StatusError):
    status_code = 400


class AuthenticationError(StatusError):
    """The request was not authenticated (HTTP 401, gRPC ``UNAUTHENTICATED``): it carried no
    credentials, or wrong ones (a login's one message, whatever part was wrong)."""

    status_code = 401


class InvalidTokenError(AuthenticationError):
    """The token sent was refused: malformed, unknown, revoked or expired; or the login session
    ended (logged out, expired, or its refresh token used twice): log in again."""


class PermissionDeniedError(StatusError):
    """Authenticated, but not allowed (HTTP 403, gRPC ``PERMISSION_DENIED``): the caller's role
    or a read-only token's scope does not allow the action."""

    status_code = 403


class NotFoundError(StatusError):
    status_code = 404


class NodeNotFoundError(NotFoundError, KeyError):
    """No catalog node at that path, or none the caller may read (the server answers both
    alike). A ``KeyError`` too, so that ``container["k"]`` behaves as a mapping's lookup."""

    # KeyError's own __str__ would show the repr of the message; StatusError's is wanted.
    __str__ = StatusError.__str__


class SessionExpiredError(NotFoundError):
    """The ticket session is gone: it expired (its ttl passed without a refresh, as the client's
    keep-alive could not reach the server in time) or the server no longer knows it. Everything
    it exported was released; open a new session. A :class:`NotFoundError` too, as the server
    answers every call naming a session that has ended."""

    def __str__(self) -> str:
        # Found out by the client itself (its expiry passed), no status came: the message alone.
        return super().__str__() if self.grpc_status or self.request_id else self.message


class TokenTimedOutError(NotFoundError):
    """A channel token that was signed by the server but is no longer good: it expired, a newer
    :meth:`~aiosdk.AsyncChannels.create_channel` for its client id replaced it, or the server no
    longer has its channel (gRPC ``NOT_FOUND`` on a token holder's call). Ask the application
    for a new token. A :class:`NotFoundError` too."""

    def __str__(self) -> str:
        # Found out by the client itself (an InspectToken answer), no status came: the message.
        return super().__str__() if self.grpc_status or self.request_id else self.message


class ConflictError(StatusError):
    status_code = 409


class IdempotencyInProgressError(ConflictError):
    """The same ``Idempotency-Key`` is still being applied by an earlier attempt.

    Transient, unlike other conflicts: retrying after ``retry_after`` gets the first answer, so a
    call that its retry mode retries anyway is retried on it too.
    """


class WatchGapError(StatusError):
    """A watch cannot resume where it was asked to: the server no longer keeps the events since
    that point (gRPC ``OUT_OF_RANGE``). Read the container again and watch from now."""

    status_code = 400


class ContinuityLostError(StatusError):
    """A channel's messages cannot go on from the position asked for: the channel's history was
    lost (its messages were cleared, or it ended and was created anew: a new epoch), or the
    position is past its last message (gRPC ``OUT_OF_RANGE``). Raised instead of skipping
    anything silently; connect again without a position to take what is pending now."""

    status_code = 400


class RequestTooLargeError(StatusError):
    """The request exceeds a size limit of the server (body, header fields, or a gRPC message);
    ``GET /api/v1/`` advertises the limits (:attr:`~aiosdk.ServerInfo.limits`). Not retried."""

    status_code = 413


class MessageTooLargeError(RequestTooLargeError):
    """A channel message over the limit of 32 KiB, refused by the client before sending it."""

    def __str__(self) -> str:
        # Found out by the client itself, no status came: the message alone.
        return super().__str__() if self.grpc_status or self.request_id else self.message


class UnprocessableEntityError(StatusError):
    status_code = 422


class RateLimitError(StatusError):
    """Too many requests; ``retry_after`` says how long the server asked to wait, if it did."""

    status_code = 429


class ChannelFullError(RateLimitError):
    """A channel's queue holds as many pending messages as the server keeps for it (gRPC
    ``RESOURCE_EXHAUSTED`` on a send or a broadcast): nothing was stored. Retry once its holder
    has taken some."""


class ServerError(StatusError):
    """The server failed (5xx)."""

    status_code = 500


class InternalServerError(ServerError):
    status_code = 500


class ServiceUnavailableError(ServerError):
    status_code = 503


_HTTP_ERRORS: Mapping[int, type[StatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    431: RequestTooLargeError,
    429: RateLimitError,
    500: InternalServerError,
    503: ServiceUnavailableError,
}

# The gRPC status, the SDK class it raises, and the HTTP status that class stands for.
_GRPC_ERRORS: Mapping[Status, tuple[type[StatusError], int]] = {
    Status.CANCELLED: (StatusError, 499),
    Status.UNKNOWN: (InternalServerError, 500),
    Status.INVALID_ARGUMENT: (BadRequestError, 400),
    Status.DEADLINE_EXCEEDED: (ServerError, 504),
    Status.NOT_FOUND: (NotFoundError, 404),
    Status.ALREADY_EXISTS: (ConflictError, 409),
    Status.PERMISSION_DENIED: (PermissionDeniedError, 403),
    Status.RESOURCE_EXHAUSTED: (RateLimitError, 429),
    Status.FAILED_PRECONDITION: (BadRequestError, 400),
    Status.ABORTED: (ConflictError, 409),
    Status.OUT_OF_RANGE: (BadRequestError, 400),
    Status.UNIMPLEMENTED: (ServerError, 501),
    Status.INTERNAL: (InternalServerError, 500),
    Status.UNAVAILABLE: (ServiceUnavailableError, 503),
    Status.DATA_LOSS: (InternalServerError, 500),
    Status.UNAUTHENTICATED: (AuthenticationError, 401),
}


# How gRPC servers (grpcio's wording, which ours keeps) say a message exceeds their limit.
_TOO_LARGE = "larger than max"

# Error types in the server's body that name a finer class than the status does.
_HTTP_ERROR_TYPES: Mapping[str, type[StatusError]] = {
    "idempotency_in_progress": IdempotencyInProgressError,
    "node_not_found": NodeNotFoundError,
    "invalid_token": InvalidTokenError,  # the client's name for a 401 to a request with a token
}


def error_for_http_status(
    status_code: int,
    message: str,
    *,
    request_id: str | None = None,
    body: object = None,
    retry_after: float | None = None,
    error_type: str | None = None,
) -> StatusError:
    """Build the exception for an HTTP error status (the class is chosen from one table)."""
    cls = _HTTP_ERROR_TYPES.get(error_type or "") or _HTTP_ERRORS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else StatusError
    return cls(
        message, status_code=status_code, request_id=request_id, body=body, retry_after=retry_after
    )


def error_for_grpc_status(
    status: Status,
    message: str | None,
    *,
    request_id: str | None = None,
    token_sent: bool = False,
) -> StatusError:
    """Build the exception for a gRPC error status, the same classes as for HTTP."""
    cls, http_status = _GRPC_ERRORS.get(status, (StatusError, 500))
    if status is Status.UNAUTHENTICATED and token_sent:
        cls = InvalidTokenError
    elif status is Status.RESOURCE_EXHAUSTED and _TOO_LARGE in (message or ""):
        cls, http_status = RequestTooLargeError, 413  # a size limit, not a rate limit
    return cls(
        message or status.name.replace("_", " ").lower(),
        status_code=http_status,
        request_id=request_id,
        grpc_status=status.name,
    )
