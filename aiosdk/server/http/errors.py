"""The error shape of the HTTP API, and how the server's errors are answered in it.

Every error response is ``{"error": {"type": ..., "message": ..., "request_id": ...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

from ..errors import ApiError, ErrorType, is_data_error
from ..logs import logger
from .routing import allowed_methods

__all__ = [
    "ErrorBody",
    "ErrorResponse",
    "api_error_response",
    "data_error_response",
    "error_json",
    "error_response",
    "install_error_handlers",
    "request_id_of",
]


_TYPE_BY_STATUS: dict[int, ErrorType] = {
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
    503: "unavailable",
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


def request_id_of(scope: Scope) -> str:
    """The request id assigned by the request-context middleware."""
    return str(scope.get("state", {}).get("request_id", ""))


def error_json(error_type: ErrorType, message: str, request_id: str) -> bytes:
    """The body of an error response, as JSON."""
    body = ErrorResponse(error=ErrorBody(type=error_type, message=message, request_id=request_id))
    return body.model_dump_json().encode()


def error_response(
    scope: Scope,
    status: int,
    error_type: ErrorType,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A response in the API's error shape."""
    body = error_json(error_type, message, request_id_of(scope))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def api_error_response(scope: Scope, exc: HTTPException) -> Response:
    """The error response for an :class:`ApiError` or any Starlette ``HTTPException``."""
    if isinstance(exc, ApiError):
        return error_response(scope, exc.status_code, exc.error_type, exc.message, exc.headers)
    status = exc.status_code
    error_type = _TYPE_BY_STATUS.get(status, "internal" if status >= 500 else "invalid_request")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else None
    message = message or _DEFAULT_MESSAGES.get(status, "Invalid request")
    return error_response(scope, status, error_type, message, exc.headers)


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
    if exc.status_code == 405:  # Starlette's Allow lists the methods of one route, not the path's
        allow = ", ".join(allowed_methods(request.app.router.routes, request.scope))
        exc = HTTPException(405, exc.detail, headers={**(exc.headers or {}), "Allow": allow})
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
