"""The server's errors: what a request handler raises when the client asked for something it
may not have, shared by the HTTP API (which answers them in its error shape) and the gRPC
services (which answer them with the matching status).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException

__all__ = [
    "AnswerCutShort",
    "ApiError",
    "ConflictError",
    "ErrorType",
    "IdempotencyInProgressError",
    "IdempotencyKeyReusedError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "is_data_error",
]

ErrorType = Literal[
    "not_found",
    "invalid_request",
    "unauthenticated",
    "permission_denied",
    "conflict",
    "stale_revision",
    "not_empty",
    "node_not_found",
    "idempotency_key_reused",
    "idempotency_in_progress",
    "rate_limited",
    "unavailable",
    "internal",
]


class ApiError(HTTPException):
    """An error answered with the API's error shape.

    Subclasses fix the status code and error type. It derives from Starlette's
    ``HTTPException`` so that FastAPI passes it through unchanged, even from request parsing.
    """

    status: ClassVar[int] = 500
    error_type: ClassVar[ErrorType] = "internal"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(self.status, message, dict(headers) if headers else None)
        self.message = message


class InvalidRequestError(ApiError):
    """The request is malformed (400)."""

    status = 400
    error_type = "invalid_request"


class UnauthenticatedError(ApiError):
    """No valid bearer token (401)."""

    status = 401
    error_type = "unauthenticated"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class PermissionDeniedError(ApiError):
    """The principal may not do this (403)."""

    status = 403
    error_type = "permission_denied"


class NotFoundError(ApiError):
    """No such resource, or not visible to the principal (404)."""

    status = 404
    error_type = "not_found"


class ConflictError(ApiError):
    """The request conflicts with the current state (409)."""

    status = 409
    error_type = "conflict"


class IdempotencyInProgressError(ApiError):
    """A request with the same ``Idempotency-Key`` is still running (409, with Retry-After).

    Unlike other conflicts this one is transient: the retry gets the first request's answer.
    """

    status = 409
    error_type = "idempotency_in_progress"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class PayloadTooLargeError(ApiError):
    """The request body exceeds the server's limit (413)."""

    status = 413
    error_type = "invalid_request"


class IdempotencyKeyReusedError(ApiError):
    """An ``Idempotency-Key`` was reused for a different request (422)."""

    status = 422
    error_type = "idempotency_key_reused"


class AnswerCutShort(Exception):
    """An answer already begun that must not be completed (what it would send changed while it
    was sent): the connection is closed mid-body, so the client sees it incomplete and may
    resume. Expected, not a fault of the server: logged without a traceback."""


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a value the client sent.

    That is SQLAlchemy's ``DataError``, or any driver error in SQLSTATE class 22 ("data
    exception": a NUL character, a string too long for its column, a number out of range...).
    The asyncpg dialect wraps most of those in a plain ``DBAPIError``, hence the SQLSTATE check.
    """
    if isinstance(exc, DataError):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate.startswith("22")
    return False
