"""The error shape of the HTTP API and the exceptions that produce it.

Every error response is ``{"error": {"type": ..., "message": ..., "request_id": ...}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

__all__ = [
    "ApiError",
    "api_error_response",
    "ConflictError",
    "data_error_response",
    "IdempotencyInProgressError",
    "ErrorBody",
    "ErrorResponse",
    "ErrorType",
    "IdempotencyKeyReusedError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "error_response",
    "install_error_handlers",
    "is_data_error",
    "request_id_of",
]

logger = logging.getLogger("aiosdk.server")

ErrorType = Literal[
    "not_found",
    "invalid_request",
    "unauthenticated",
    "permission_denied",
    "conflict",
    "idempotency_key_reused",
    "idempotency_in_progress",
    "rate_limited",
    "internal",
]

_TYPE_BY_STATUS: dict[int, ErrorType] = {
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
}

_DEFAULT_MESSAGES: dict[int, str] = {
    404: "Not found",
    405: "Method not allowed",
    500: "Internal server error",
}


class ErrorBody(BaseModel):
    """The ``error`` member of an error response."""

    type: ErrorType
    message: str
    request_id: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


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


def request_id_of(scope: Scope) -> str:
    """The request id assigned by the request-context middleware."""
    return str(scope.get("state", {}).get("request_id", ""))


def error_response(
    scope: Scope,
    status: int,
    error_type: ErrorType,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A response in the API's error shape."""
    body = ErrorResponse(
        error=ErrorBody(type=error_type, message=message, request_id=request_id_of(scope))
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def api_error_response(scope: Scope, exc: HTTPException) -> Response:
    """The error response for an :class:`ApiError` or any Starlette ``HTTPException``."""
    if isinstance(exc, ApiError):
        return error_response(scope, exc.status_code, exc.error_type, exc.message, exc.headers)
    status = exc.status_code
    error_type = _TYPE_BY_STATUS.get(status, "internal" if status >= 500 else "invalid_request")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else None
    message = message or _DEFAULT_MESSAGES.get(status, "Invalid request")
    return error_response(scope, status, error_type, message, exc.headers)


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


def data_error_response(scope: Scope, exc: BaseException) -> Response:
    """The 400 for a value the database refused (see :func:`is_data_error`).

    Routes validate what they accept, so this is a safety net: it is logged, and the
    database's message (which may quote the value) is not sent back.
    """
    logger.warning(
        "The database refused a value in %s %s (request %s): %s",
        scope.get("method"),
        scope.get("path"),
        request_id_of(scope),
        getattr(exc, "orig", exc),
    )
    message = (
        "Invalid request: a value is not acceptable (bad characters, too long or out of range)"
    )
    return error_response(scope, 400, "invalid_request", message)


def _describe_validation_errors(errors: Any) -> str:
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}" if location else error["msg"])
    return "Invalid request: " + "; ".join(parts)


async def _handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return api_error_response(request.scope, exc)


async def _handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message = _describe_validation_errors(exc.errors())
    return error_response(request.scope, 422, "invalid_request", message)


async def _handle_database_error(request: Request, exc: Exception) -> Response:
    if not is_data_error(exc):
        raise exc
    return data_error_response(request.scope, exc)


def install_error_handlers(app: FastAPI) -> None:
    """Answer HTTP and validation errors, and values the database refuses, in the error shape.

    Unexpected exceptions are turned into 500s by the request-context middleware (which also
    answers 400 to a database data error raised outside the routes).
    """
    app.add_exception_handler(HTTPException, _handle_http_exception)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(DBAPIError, _handle_database_error)
