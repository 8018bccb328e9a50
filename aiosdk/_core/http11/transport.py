"""``AsyncioTransport``: the httpx transport glue."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterable, Awaitable
from functools import partial
from types import TracebackType
from typing import Final, TypeVar

import httpx

from .connection import Connection, Origin, ServerDisconnectedError
from .pool import ConnectionPool, PoolClosed
from .streams import ResponseStream

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_HTTP11: Final = {"http_version": b"HTTP/1.1"}
_RETRY_BACKOFF: Final = 0.5
_NO_TIMEOUTS: Final[dict[str, float | None]] = {}
# Smaller bodies are joined to the request head and sent in one write.
_JOIN_BODY_BELOW: Final = 64 * 1024

_T = TypeVar("_T")

CertTypes = str | tuple[str, str] | tuple[str, str, str]
DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class AsyncioTransport(httpx.AsyncBaseTransport):
    """A fast HTTP/1.1 transport for ``httpx.AsyncClient`` on asyncio.

    A drop-in replacement for ``httpx.AsyncHTTPTransport`` for plain HTTP/1.1
    and HTTPS without proxies: the same limits, TLS settings, per-request
    timeouts and exception classes.  It only runs on an asyncio event loop.
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits = DEFAULT_LIMITS,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        retries: int = 0,
        local_address: str | None = None,
    ) -> None:
        self._tls_settings = (verify, cert, trust_env)
        self._ssl_context: ssl.SSLContext | None = None
        self._limits = limits
        self._retries = retries
        self._local_address = local_address
        self._pool = ConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )

    def __repr__(self) -> str:
        limits = self._limits
        return (
            f"<AsyncioTransport max_connections={limits.max_connections} "
            f"keepalive={limits.max_keepalive_connections}>"
        )

    async def __aenter__(self) -> AsyncioTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._pool.close()
        # Aborted transports release their sockets in callbacks already scheduled.
        await asyncio.sleep(0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", _NO_TIMEOUTS)
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'.", request=request
            )
        origin = (scheme, url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[scheme])
        is_head = request.method == "HEAD"
        head, keep_alive = _encode_head(request)
        stream = request.stream
        body: bytes | None = None
        # A ByteStream holds the whole body (as bytes, or as slices of a buffer): it may be sent
        # again. Any other stream is sent once.
        replayable = isinstance(stream, httpx.ByteStream)
        if replayable:
            try:
                body = request.content
            except httpx.RequestNotRead:
                body = None
        pool = self._pool
        resent = False
        while True:
            try:
                conn = await pool.acquire(origin, timeouts.get("pool"), fresh=resent)
            except (httpx.PoolTimeout, PoolClosed) as exc:
                exc.request = request
                raise
            if conn is None:
                try:
                    conn = await self._connect(origin, timeouts.get("connect"), request)
                except BaseException:
                    pool.free_slot()
                    raise
                try:
                    pool.track(conn)
                except PoolClosed as exc:
                    exc.request = request
                    raise
            reused = conn.requests_served > 0
            try:
                conn.start_request(is_head, keep_alive)
                if body is None:
                    conn.write(head)
                    await _send_stream(conn, stream, request, timeouts.get("write"))
                else:
                    if len(body) < _JOIN_BODY_BELOW:
                        conn.write(head + body)
                    else:
                        conn.write(head)
                        conn.write(body)
                    conn.request_sent = True  # all of it is in the transport's buffer
                    await conn.drain(timeouts.get("write"))
                status, reason, headers = await conn.receive_head(timeouts.get("read"))
            except ServerDisconnectedError as exc:
                pool.discard(conn)
                # A reused connection that closes before any response byte was most likely
                # closed while idle, but the server may have read the request: only a request
                # that is safe to apply twice is sent again, once, on a new connection (which
                # cannot be stale); anything beyond that is the retry policy's to decide.
                if (
                    reused
                    and not resent
                    and replayable
                    and request.method in _IDEMPOTENT_METHODS
                    and not pool.closed
                ):
                    resent = True
                    continue
                exc.request = request
                raise
            except httpx.TransportError as exc:
                pool.discard(conn)
                exc.request = request
                raise
            except BaseException:
                pool.discard(conn)
                raise
            extensions = _HTTP11
            if reason:
                extensions = {"http_version": b"HTTP/1.1", "reason_phrase": reason}
            return httpx.Response(
                status,
                headers=headers,
                stream=ResponseStream(conn, pool, timeouts.get("read"), request),
                extensions=extensions,
            )

    async def _new_ssl_context(self) -> ssl.SSLContext:
        # Made on the first HTTPS connection only: loading CA certificates blocks (so it runs in
        # a thread), and a plain-HTTP client then never touches OpenSSL (which a forked child
        # may find locked).
        verify, cert, trust_env = self._tls_settings
        return await asyncio.to_thread(
            httpx.create_ssl_context, verify=verify, cert=cert, trust_env=trust_env
        )

    async def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request
    ) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = scheme == "https"
        sni = request.extensions.get("sni_hostname", host) if tls else None
        if tls and self._ssl_context is None:
            self._ssl_context = await self._new_ssl_context()
        local_addr = (self._local_address, 0) if self._local_address else None
        attempt = 0
        while True:
            try:
                _, conn = await _with_timeout(
                    loop.create_connection(
                        partial(Connection, loop, origin),
                        host,
                        port,
                        ssl=self._ssl_context if tls else None,
                        server_hostname=sni,
                        local_addr=local_addr,
                    ),
                    timeout,
                )
            except (OSError, asyncio.TimeoutError) as exc:
                if attempt >= self._retries:
                    if isinstance(exc, asyncio.TimeoutError):
                        raise httpx.ConnectTimeout(
                            f"Timed out connecting to {host}:{port}.", request=request
                        ) from exc
                    raise httpx.ConnectError(str(exc), request=request) from exc
                await asyncio.sleep(_RETRY_BACKOFF * 2 ** (attempt - 1) if attempt else 0)
                attempt += 1
            else:
                return conn


if sys.version_info >= (3, 11):

    async def _with_timeout(awaitable: Awaitable[_T], timeout: float | None) -> _T:
        async with asyncio.timeout(timeout):
            return await awaitable

else:

    async def _with_timeout(awaitable: Awaitable[_T], timeout: float | None) -> _T:
        return await asyncio.wait_for(awaitable, timeout)


def _encode_head(request: httpx.Request) -> tuple[bytes, bool]:
    """Return the request head and whether the request allows keep-alive."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines.extend([name + b": " + value for name, value in request.headers.raw])
    lines.append(b"\r\n")
    head = b"\r\n".join(lines)
    # Every CR and LF must be one of ours: anything else would split or inject headers.
    if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines):
        raise httpx.LocalProtocolError(
            "Illegal CR or LF in the request line or a header.", request=request
        )
    lowered = head.lower()
    start = lowered.find(b"\r\nconnection:")
    if start < 0:
        return head, True
    end = lowered.index(b"\r\n", start + 2)
    tokens = lowered[start + 14 : end].split(b",")
    return head, not any(token.strip() == b"close" for token in tokens)


async def _send_stream(
    conn: Connection,
    stream: httpx.SyncByteStream | httpx.AsyncByteStream,
    request: httpx.Request,
    timeout: float | None,
) -> None:
    if not isinstance(stream, AsyncIterable):
        raise TypeError("AsyncioTransport needs an async request stream.")
    chunked = (
        "content-length" not in request.headers
        and "chunked" in request.headers.get("transfer-encoding", "").lower()
    )
    try:
        async for chunk in stream:
            if conn.head_received:
                # The server answered before the body was sent (413, 401, ...) and may not read
                # the rest: stop, and the connection is closed after the response.
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
                return
            if not chunk:
                continue
            if chunked:
                conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                conn.write(chunk)
            await conn.drain(timeout)
        if chunked:
            conn.write(b"0\r\n\r\n")
    except httpx.TransportError:
        # The server may have answered and closed before reading the whole body.
        if not conn.head_received:
            raise
        return
    conn.request_sent = True
