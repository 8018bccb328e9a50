"""ASGI middleware: request ids, access logging, counting, 500s, request targets, HEAD, body
size."""

from __future__ import annotations

import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    AnswerCutShort,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    is_data_error,
)
from ..logs import choose_request_id, logger
from ..state import Metrics
from ..storage.db import is_lock_timeout
from ..unit_of_work import DatabaseBusyError
from .bodies import HEAD_REQUEST
from .errors import api_error_response, data_error_response, error_response
from .idempotency import MUTATING_METHODS
from .routing import allowed_methods, is_served

__all__ = [
    "DATA_PATHS",
    "BodySizeLimitMiddleware",
    "HeadMiddleware",
    "RequestContextMiddleware",
    "RequestTargetMiddleware",
    "UnservedMutationMiddleware",
]

REQUEST_ID_HEADER = "X-Request-ID"


class RequestContextMiddleware:
    """The outermost layer: gives every request an id, logs and counts it.

    A client's ``X-Request-ID`` is kept when it is sane (1..128 URL-safe characters), otherwise
    one is generated; either way it is echoed on the response. Unexpected exceptions become a
    500 in the API's error shape and are logged with the request id, never sent to the client;
    except a value the database refuses (:func:`~.errors.is_data_error`), a client's mistake
    that validation missed, which is a 400; and the database giving up on a lock
    (:func:`~..storage.db.is_lock_timeout`), which is a 503 with ``Retry-After``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id

        status: int | None = None
        complete = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_request_id)
        except ClientDisconnect:
            logger.debug("Client went away during %s %s", scope["method"], scope["path"])
        except AnswerCutShort as exc:
            logger.info(
                "Cut %s %s short (request %s): %s", scope["method"], scope["path"], request_id, exc
            )
            raise
        except HTTPException as exc:
            if status is not None:
                raise
            await api_error_response(scope, exc)(scope, receive, send_with_request_id)
        except Exception as exc:
            if status is None and is_data_error(exc):
                await data_error_response(scope, exc)(scope, receive, send_with_request_id)
                return
            if status is None and is_lock_timeout(exc):
                logger.warning(
                    "The database was busy for %s %s (request %s): %s",
                    scope["method"],
                    scope["path"],
                    request_id,
                    getattr(exc, "orig", exc),
                )
                busy = DatabaseBusyError()
                await api_error_response(scope, busy)(scope, receive, send_with_request_id)
                return
            logger.exception(
                "Unhandled error in %s %s (request %s)", scope["method"], scope["path"], request_id
            )
            if status is None:
                response = error_response(scope, 500, "internal", "Internal server error")
                await response(scope, receive, send_with_request_id)
            elif not complete:
                raise
        finally:
            self.metrics.requests_served += 1
            logger.info(
                "%s %s -> %s in %.1f ms (request %s)",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                request_id,
            )


class RequestTargetMiddleware:
    """Rejects with 400 a request whose path or query holds a NUL character.

    No route takes one, and PostgreSQL cannot store or even compare a string holding one, so
    such a path parameter or query parameter would otherwise fail in the database.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query: bytes = scope.get("query_string", b"")
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                raise InvalidRequestError("The request path and query must not contain NUL (%00)")
        await self.app(scope, receive, send)


class HeadMiddleware:
    """Answers HEAD wherever GET is answered (RFC 9110): as the GET, headers and all, no body.

    The routes declare GET only; a HEAD request goes through every layer inside this one as a
    GET, and its response body is dropped here (Content-Length stays that of the GET); the scope
    says it is a HEAD (:data:`~.bodies.HEAD_REQUEST`), so that a streamed body is not read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET", HEAD_REQUEST: True}, receive, send_headers_only)


DATA_PATHS = ("/api/v1/array/", "/api/v1/table/", "/api/v1/sparse/", "/api/v1/buckets/")
"""The paths of the data routes, whose bodies (blocks, partitions, objects) have a limit of their
own."""


class BodySizeLimitMiddleware:
    """Rejects request bodies larger than ``max_bytes`` (``data_max_bytes`` on the
    :data:`DATA_PATHS`) with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int, data_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.data_max_bytes = max_bytes if data_max_bytes is None else data_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.data_max_bytes if scope["path"].startswith(DATA_PATHS) else self.max_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"Request body exceeds {limit} bytes")


class UnservedMutationMiddleware:
    """Answers 404 or 405 (with ``Allow``) to a mutating request that no route serves.

    The router would answer the same, but only after the idempotency layer, which is outside
    it, had claimed the request's key and stored that answer: a key reused on a wrong path or
    method would then get 422, and a database write would be spent on a request that does
    nothing. Runs inside authentication, so that the routes are not revealed to strangers.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in MUTATING_METHODS
            and not is_served(self.routes, scope, scope["method"])
        ):
            allowed = allowed_methods(self.routes, scope)
            if not allowed:
                raise NotFoundError("Not found")
            raise HTTPException(405, headers={"Allow": ", ".join(allowed)})
        await self.app(scope, receive, send)
