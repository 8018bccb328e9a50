"""The bodies of the data routes: requests received whole into one buffer (what the idempotency
layer reads a keyed request's body with too), answers sent from their buffers in pieces.

A request body whose size a route expects (``expected``: checked after authorization) is received
into a buffer allocated once at that size (no list of pieces joined at the end, no buffer
regrown). Any other body (the idempotency layer's, read before any permission check; a chunked
one) goes into one buffer grown as its bytes arrive, so that a declared ``Content-Length`` alone
commits no memory. Either way its size is bounded by the body limit of the layers around
(:class:`~.middleware.BodySizeLimitMiddleware`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import anyio
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..catalog.nodes import InvalidContentError
from ..errors import InvalidRequestError

__all__ = [
    "HEAD_REQUEST",
    "PIECE_BYTES",
    "BodyResponse",
    "StreamedResponse",
    "read_body",
    "receive_body",
]


async def receive_body(scope: Scope, receive: Receive, expected: int | None = None) -> bytearray:
    """The body of the request ``scope``, from its ``receive``, in one buffer.

    ``expected``, when given, is the size the body must have: a ``Content-Length`` saying
    otherwise is refused (:class:`~..catalog.nodes.InvalidContentError`, 422) before the body is
    read, and a chunked body once it passes it. A body longer or shorter than its
    ``Content-Length`` is :class:`~..errors.InvalidRequestError` (400). Only with ``expected``
    is the buffer allocated up front at the body's size; without, it grows as bytes arrive (a
    ``Content-Length`` is the sender's word, not yet checked against anything). A body that
    arrives in one ``bytearray`` of its declared size (as the idempotency layer hands on the
    body it read) is taken as it is, not copied.
    """
    declared = Headers(scope=scope).get("content-length")
    size = int(declared) if declared is not None and declared.isdigit() else None
    if expected is not None and size is not None and size != expected:
        raise InvalidContentError(f"The body must be {expected:,} bytes, not {size:,}")
    if size is None or expected is None:
        return await _receive_growing(receive, expected, size)
    body: bytearray | None = None
    view: memoryview | None = None
    received = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if body is None and not more and isinstance(chunk, bytearray) and len(chunk) == size:
                return chunk
            if body is None:
                body = bytearray(size)
                view = memoryview(body)
            end = received + len(chunk)
            if end > size:
                raise InvalidRequestError("The body is longer than its Content-Length")
            assert view is not None
            view[received:end] = chunk
            received = end
            if not more:
                break
    finally:
        if view is not None:
            view.release()
    if received != size:
        raise InvalidRequestError("The body is shorter than its Content-Length")
    assert body is not None
    return body


async def _receive_growing(
    receive: Receive, expected: int | None, declared: int | None
) -> bytearray:
    """A body gathered into one buffer grown (amortised) as its bytes arrive: one sent without
    a ``Content-Length`` (chunked; refused once it passes ``expected``), or one whose size no
    route has vouched for yet (``expected`` is None; ``declared`` its ``Content-Length``)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        if not body and not more and isinstance(chunk, bytearray):
            body = chunk  # the whole body in one buffer already: taken, not copied
        else:
            body += chunk
        if declared is not None and len(body) > declared:
            raise InvalidRequestError("The body is longer than its Content-Length")
        if not more or (expected is not None and len(body) > expected):
            break
    if declared is not None and len(body) != declared:
        raise InvalidRequestError("The body is shorter than its Content-Length")
    if expected is not None and len(body) != expected:
        raise InvalidContentError(f"The body must be {expected:,} bytes, not {len(body):,}")
    return body


async def read_body(request: Request, expected: int | None = None) -> bytearray:
    """The body of ``request``, in one buffer (see :func:`receive_body`)."""
    return await receive_body(request.scope, request.receive, expected)


PIECE_BYTES = 1024 * 1024
"""A body is handed to the server's transport this much at a time: measured cheaper than in
one piece, which the event loop's transport copies whole into fresh memory of its own."""

HEAD_REQUEST = "aiosdk.head"
"""Set (true) in the scope of a HEAD request answered as a GET (see
:class:`~.middleware.HeadMiddleware`): a :class:`StreamedResponse` then reads no body."""


class StreamedResponse(Response):
    """An answer of ``size`` bytes that ``pieces()`` yields (buffers, not copied, nor joined),
    going out :data:`PIECE_BYTES` at a time, each piece once the transport has taken the one
    before; with no ``size`` (``None``), without a ``Content-Length`` (chunked); to a HEAD
    request, its headers alone, ``pieces`` never called."""

    def __init__(
        self,
        pieces: Callable[[], AsyncIterator[bytes | memoryview]],
        size: int | None,
        status_code: int,
        headers: Mapping[str, str],
        media_type: str,
    ) -> None:
        super().__init__(None, status_code, headers, media_type)
        self.pieces = pieces
        if size is None:
            del self.headers["content-length"]
        else:
            self.headers["content-length"] = str(size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if not scope.get(HEAD_REQUEST):
            # The server's send() returns quietly once the client has gone, so the pieces
            # would be read to the end for no one: the client's going stops them.
            failure: list[Exception] = []
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
                try:
                    await self._send_pieces(send)
                except Exception as exc:  # raised as it is, not in an exception group
                    failure.append(exc)
                group.cancel_scope.cancel()
            if failure:
                raise failure[0]
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_pieces(self, send: Send) -> None:
        async for span in self.pieces():
            view = memoryview(span)
            for start in range(0, len(view), PIECE_BYTES):
                piece = view[start : start + PIECE_BYTES]
                await send({"type": "http.response.body", "body": piece, "more_body": True})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once the client has disconnected (the request's body is read by
    then: the routes that stream an answer read theirs first)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


class BodyResponse(StreamedResponse):
    """An answer whose body is ``spans`` one after another (see :class:`StreamedResponse`),
    with their total as its ``Content-Length``."""

    def __init__(
        self,
        spans: Sequence[memoryview],
        status_code: int,
        headers: Mapping[str, str],
        media_type: str,
    ) -> None:
        async def pieces() -> AsyncIterator[memoryview]:
            for span in spans:
                yield span

        super().__init__(pieces, sum(len(span) for span in spans), status_code, headers, media_type)
