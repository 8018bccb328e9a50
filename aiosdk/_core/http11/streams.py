"""The response body stream handed to httpx."""

from __future__ import annotations

import httpx

from .connection import Connection
from .pool import ConnectionPool


class ResponseStream(httpx.AsyncByteStream):
    """Yields the body spans buffered by a connection, each exactly as received.

    Reading the body to its end returns the connection to the pool; closing the
    stream before that closes the connection (unless the whole response already
    arrived), so no half-read connection is ever reused.
    """

    __slots__ = ("_conn", "_pool", "_request", "_timeout")

    def __init__(
        self,
        conn: Connection,
        pool: ConnectionPool,
        timeout: float | None,
        request: httpx.Request,
    ) -> None:
        self._conn: Connection | None = conn
        self._pool = pool
        self._timeout = timeout
        self._request = request

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        try:
            chunk = await conn.receive_body(self._timeout)
        except BaseException as exc:
            self._failed(conn, exc)
            raise
        if chunk is None:
            self._conn = None
            self._pool.release(conn)
            raise StopAsyncIteration
        return chunk

    async def receive_into(self, buffer: memoryview) -> int:
        """Receive the next bytes of the body straight into ``buffer`` (writable bytes, not
        empty): how many, or 0 once the body is complete (the connection then goes back to
        the pool). It may be mixed with iterating the stream: each byte comes once."""
        conn = self._conn
        if conn is None:
            return 0
        try:
            size = await conn.receive_into(buffer, self._timeout)
        except BaseException as exc:
            self._failed(conn, exc)
            raise
        if not size:
            self._conn = None
            self._pool.release(conn)
        return size

    def _failed(self, conn: Connection, exc: BaseException) -> None:
        self._conn = None
        self._pool.discard(conn)
        if isinstance(exc, httpx.TransportError):
            exc.request = self._request

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            if conn.response_complete:
                self._pool.release(conn)
            else:
                self._pool.discard(conn)
