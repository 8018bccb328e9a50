"""One HTTP/1.1 connection: an asyncio buffered protocol driving an httptools parser."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Final, cast

import httptools
import httpx

Origin = tuple[str, str, int]
HeaderList = list[tuple[bytes, bytes]]

_INITIAL_BUFFER: Final = 64 * 1024
_MAX_BUFFER: Final = 1024 * 1024
_PAUSE_ABOVE: Final = 8 * 1024 * 1024
_RESUME_BELOW: Final = 1024 * 1024
_MAX_HEAD_BYTES: Final = 1024 * 1024
# A Content-Length body with more than this left after a read bypasses the parser.
_DIRECT_BODY_ABOVE: Final = 64 * 1024

# Response states of a connection.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_DONE: Final = 3


class ServerDisconnectedError(httpx.RemoteProtocolError):
    """The server closed the connection before sending any byte of the response.

    On a reused keep-alive connection this means the server dropped it while it
    was idle, so the request can safely be sent again on another connection.
    """


class _HeadDone(Exception):
    """Raised from a parser callback to stop parsing after a HEAD response's headers."""


class _UnexpectedMessage(Exception):
    """Raised from a parser callback when bytes follow a complete response."""


def _expire_drain(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _BodyProtocol:
    """What the protocols that receive a Content-Length body forward to the connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def eof_received(self) -> bool:
        return self._conn.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self._conn.pause_writing()

    def resume_writing(self) -> None:
        self._conn.resume_writing()


class _DirectBody(_BodyProtocol, asyncio.Protocol):
    """The transport's protocol while a connection receives a Content-Length body.

    asyncio hands ``data_received`` a fresh ``bytes`` object per socket read,
    which is queued for the reader as is: each body byte is copied once, by the
    kernel, instead of into the receive buffer and again out of it.
    """

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self._conn._direct_body_received(data)


class _IntoBody(_BodyProtocol, asyncio.BufferedProtocol):
    """The transport's protocol while a Content-Length body is received into the reader's
    own buffer (:meth:`Connection.receive_into`): the kernel copies each byte there, once,
    and no ``bytes`` object is made."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._conn._into_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._conn._into_updated(nbytes)


class Connection(asyncio.BufferedProtocol):
    """A keep-alive HTTP/1.1 client connection.

    Bytes are received into one reused buffer (growing from 64 KiB to 1 MiB
    while reads fill it) and parsed by httptools, which copies each body span
    once into a ``bytes`` object queued for the reader.  The rest of a large
    Content-Length body skips both: the transport switches to a plain protocol
    (``_DirectBody``) whose fresh ``bytes`` per read are counted and queued as
    is, or, while a reader waits in :meth:`receive_into`, one (``_IntoBody``)
    that has the socket read it into the reader's own buffer.  Reading pauses
    while more than 8 MiB are queued.  At most one request is in flight.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.origin = origin
        self.requests_served = 0
        self.idle_since = 0.0
        self.closed = False
        self.request_sent = False
        """Whether the whole request (head and body) was handed to the socket."""
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray(_INITIAL_BUFFER)
        self._view = memoryview(self._buffer)
        self._parser = httptools.HttpResponseParser(self)
        self._state = _IDLE
        self._is_head = False
        self._client_keep_alive = True
        self._received = 0
        self._keep_alive = False
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[bool] | None = None
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._drain_waiter: asyncio.Future[bool] | None = None
        self._error: httpx.TransportError | None = None
        self._status_code = 0
        self._reason = b""
        self._headers: HeaderList = []
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._body_bytes = 0
        self._framing_checked = False
        self._direct: _DirectBody | None = None
        self._into_body: _IntoBody | None = None
        self._into: memoryview | None = None
        self._into_filled = 0
        self._remaining = 0
        self._direct_keep_alive = False

    # -- asyncio protocol callbacks ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's, or uvloop's (which does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if self._state == _IDLE or self._state == _DONE:
            # Nothing may arrive between responses; the connection is unusable.
            self._fail(httpx.RemoteProtocolError("Received data while no request was pending."))
            return
        self._received += nbytes
        try:
            self._parser.feed_data(self._view[:nbytes])
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadDone):
                self._finish_head_response(nbytes)
            elif isinstance(exc.__context__, _UnexpectedMessage):
                self._keep_alive = False
            else:
                self._fail(httpx.RemoteProtocolError(f"Malformed HTTP response: {exc}"))
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("Unsupported protocol upgrade by the server."))
        except httptools.HttpParserError as exc:
            reason = exc.args[0] if exc.args else exc
            self._fail(httpx.RemoteProtocolError(f"Malformed HTTP response: {reason}"))
        else:
            if self._state == _BODY:
                if not self._framing_checked:
                    self._start_direct_body()
            elif self._state == _HEAD and self._received > _MAX_HEAD_BYTES:
                self._fail(httpx.RemoteProtocolError("Response header section is too large."))
        if nbytes == len(self._buffer) and nbytes < _MAX_BUFFER:
            self._buffer = bytearray(2 * nbytes)
            self._view = memoryview(self._buffer)
        if self._buffered > _PAUSE_ABOVE and not self._reading_paused and not self.closed:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()
        if self._state >= _BODY:
            self._wake_drain()

    def eof_received(self) -> bool:
        if self._state == _BODY:
            if self._reads_until_close():
                self._state = _DONE
                self._keep_alive = False
            else:
                self._error = httpx.RemoteProtocolError(
                    "Server closed the connection without sending the complete body "
                    f"(received {self._body_bytes} bytes)."
                )
        self._mark_closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._error is None and self._state in (_HEAD, _BODY):
            if self._state == _HEAD and self._received == 0:
                self._error = ServerDisconnectedError(f"Server disconnected: {exc}")
            else:
                self._error = httpx.ReadError(str(exc) or type(exc).__name__)
        elif self._state == _BODY:
            self.eof_received()
        self._mark_closed()
        self._transport = None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_drain()

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._state != _HEAD:
            raise _UnexpectedMessage

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status_code: int = self._parser.get_status_code()
        if 100 <= status_code < 200 and status_code != 101:
            # Informational response (e.g. 100 Continue): wait for the final one.
            self._reason = b""
            self._headers = []
            return
        self._status_code = status_code
        self._state = _BODY
        if self._is_head:
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        self._body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self._state == _BODY:
            self._state = _DONE
            self._keep_alive = self._client_keep_alive and self._parser.should_keep_alive()

    # -- helpers for the callbacks ----------------------------------------------------

    def _finish_head_response(self, nbytes: int) -> None:
        # httptools cannot be told that a HEAD response has no body, so parsing was
        # stopped after the headers and the parser is replaced for the next response.
        # Reuse is only safe if the headers ended exactly at the end of this read.
        self._parser = httptools.HttpResponseParser(self)
        self._state = _DONE
        ends_with_head = self._buffer[nbytes - 4 : nbytes] == b"\r\n\r\n"
        self._keep_alive = self._client_keep_alive and ends_with_head

    def _start_direct_body(self) -> None:
        """Receive the rest of a large Content-Length body without the parser."""
        self._framing_checked = True
        length = -1
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                if length >= 0 or not value.strip().isdigit():
                    return  # the parser vets the header; keep it in charge of odd ones
                length = int(value)
            elif lowered == b"transfer-encoding":
                return
        remaining = length - self._body_bytes
        transport = self._transport
        if remaining <= _DIRECT_BODY_ABOVE or transport is None or self.closed:
            return
        # The parser is left mid-body: a fresh one parses the next response.
        self._direct_keep_alive = self._client_keep_alive and self._parser.should_keep_alive()
        self._parser = httptools.HttpResponseParser(self)
        self._remaining = remaining
        transport.set_protocol(self._direct_protocol())

    def _direct_body_received(self, data: bytes) -> None:
        size = len(data)
        remaining = self._remaining - size
        if remaining < 0:
            # Bytes after the complete response: the connection is unusable.
            data = data[: self._remaining]
            size = len(data)
        self._direct_advanced(size, keep_alive=remaining == 0)
        self._body.append(data)
        self._buffered += size
        if self._buffered > _PAUSE_ABOVE and not self._reading_paused and not self.closed:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def _direct_advanced(self, size: int, *, keep_alive: bool = True) -> None:
        """``size`` more bytes of a direct body arrived (at most what was left of it)."""
        self._body_bytes += size
        self._remaining -= size
        if not self._remaining:
            self._state = _DONE
            self._keep_alive = keep_alive and self._direct_keep_alive
            assert self._transport is not None
            self._transport.set_protocol(self)

    def _open_into(self) -> memoryview | None:
        """The reader's buffer while it takes more of the body; else ``None``: a transport
        still feeding a protocol it was told to leave (Python 3.10's SSL transport, even after
        the body ended within a decrypted read) gets the connection's own buffer (never an
        empty view, which asyncio takes for a fatal error)."""
        into = self._into
        if into is None or self._state != _BODY or self._into_filled == len(into):
            return None
        return into

    def _into_buffer(self) -> memoryview:
        into = self._open_into()
        return self._view if into is None else into[self._into_filled :]

    def _into_updated(self, nbytes: int) -> None:
        into = self._open_into()
        if into is None:
            # Python 3.10's SSL transport feeds the rest of a decrypted read to the protocol
            # it began with: bytes received into the connection's own buffer go on from here.
            if self._state == _BODY and self._remaining:
                self._direct_body_received(bytes(self._view[:nbytes]))
            else:
                self.buffer_updated(nbytes)
            return
        self._into_filled += nbytes
        self._direct_advanced(nbytes)
        if self._state == _BODY and self._into_filled == len(into):
            self._into = None  # full: the rest of the body is queued for the next call
            assert self._transport is not None
            self._transport.set_protocol(self._direct_protocol())
        self._wake()

    def _direct_protocol(self) -> _DirectBody:
        direct = self._direct
        if direct is None:
            direct = self._direct = _DirectBody(self)
        return direct

    def _reads_until_close(self) -> bool:
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            self._error = error
        self._keep_alive = False
        self.abort()

    def _mark_closed(self) -> None:
        self.closed = True
        self._keep_alive = False
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for progress on the response; False when the timeout elapsed first."""
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        if timeout is None:
            self._deadline = None
        else:
            # One timer per connection, re-armed only when it fires early, instead
            # of a new timer for every wait.
            self._deadline = deadline = self._loop.time() + timeout
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = self._loop.call_at(deadline, self._on_deadline)
        try:
            return await waiter
        finally:
            self._waiter = None

    def _on_deadline(self) -> None:
        self._timer = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline is None:
            return
        if self._loop.time() >= deadline:
            waiter.set_result(False)
        else:
            self._timer = self._loop.call_at(deadline, self._on_deadline)

    # -- used by the pool, the transport and the response stream ---------------------

    @property
    def reusable(self) -> bool:
        """Whether the last exchange completed both ways and the connection may be kept alive.

        A request whose body was not fully sent (the server answered early) leaves the
        connection mid-message: the next request would be read as the rest of that body.
        """
        return self._state == _DONE and self._keep_alive and self.request_sent and not self.closed

    @property
    def response_complete(self) -> bool:
        return self._state == _DONE

    def abort(self) -> None:
        """Close the connection at once, discarding anything buffered."""
        self._keep_alive = False
        if self._transport is not None and not self.closed:
            self._transport.abort()
        self._mark_closed()

    def start_request(self, is_head: bool, keep_alive: bool) -> None:
        """Reset the response state for a request; ``keep_alive`` False closes it after."""
        self._state = _HEAD
        self._is_head = is_head
        self._client_keep_alive = keep_alive
        self.request_sent = False
        self._received = 0
        self._keep_alive = False
        self._error = None
        self._reason = b""
        self._headers = []
        self._body_bytes = 0
        self._framing_checked = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ServerDisconnectedError("Server disconnected.")
        assert self._transport is not None
        self._transport.write(data)

    async def drain(self, timeout: float | None) -> None:
        """Wait until the transport's write buffer is below its high-water mark, or until the
        response head arrives (a server answering early may have stopped reading)."""
        if not self._writing_paused or self.head_received:
            return
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._drain_waiter = waiter
        timer = None if timeout is None else self._loop.call_later(timeout, _expire_drain, waiter)
        try:
            in_time = await waiter
        finally:
            self._drain_waiter = None
            if timer is not None:
                timer.cancel()
        if not in_time:
            raise httpx.WriteTimeout("Timed out while sending the request.")
        if self.closed:
            raise httpx.WriteError("Server closed the connection while the request was sent.")

    @property
    def head_received(self) -> bool:
        return self._state >= _BODY

    async def receive_head(self, timeout: float | None) -> tuple[int, bytes, HeaderList]:
        """Wait for the response's status line and headers."""
        while self._state == _HEAD:
            if self._error is not None:
                raise self._error
            if self.closed:
                if self._received == 0:
                    raise ServerDisconnectedError("Server disconnected without sending a response.")
                raise httpx.RemoteProtocolError(
                    "Server disconnected before sending the complete response headers."
                )
            if not await self._wait(timeout):
                raise httpx.ReadTimeout("Timed out waiting for the response headers.")
        return self._status_code, self._reason, self._headers

    async def receive_body(self, timeout: float | None) -> bytes | None:
        """Return the next buffered body span, or None once the body is complete."""
        body = self._body
        while not body:
            if self._state == _DONE:
                return None
            await self._await_body(timeout)
        chunk = body.popleft()
        self._taken(len(chunk))
        return chunk

    async def receive_into(self, buffer: memoryview, timeout: float | None) -> int:
        """Receive the next bytes of the body into ``buffer`` (bytes, not empty): how many
        (at least one, at most ``len(buffer)``), or 0 once the body is complete.

        Bytes already queued are copied; the rest of a large Content-Length body is read by
        the socket straight into ``buffer``. Once this returns or raises, the connection
        keeps no reference to ``buffer`` and never writes into it again.
        """
        while not self._body:
            if self._state == _DONE:
                return 0
            live = self._error is None and not self.closed
            if live and self._remaining and self._transport is not None:
                return await self._receive_directly(buffer, timeout)
            await self._await_body(timeout)
        body = self._body
        size = len(buffer)
        filled = 0
        while body and filled < size:
            chunk = body[0]
            take = min(len(chunk), size - filled)
            if take < len(chunk):
                body[0] = chunk[take:]
                buffer[filled : filled + take] = memoryview(chunk)[:take]
            else:
                body.popleft()
                buffer[filled : filled + take] = chunk
            filled += take
        self._taken(filled)
        return filled

    async def _receive_directly(self, buffer: memoryview, timeout: float | None) -> int:
        transport = self._transport
        assert transport is not None
        into_body = self._into_body
        if into_body is None:
            into_body = self._into_body = _IntoBody(self)
        self._into = buffer[: self._remaining]
        self._into_filled = 0
        transport.set_protocol(into_body)
        try:
            while not self._into_filled:
                await self._await_body(timeout)
            return self._into_filled
        finally:
            self._into = None
            if transport.get_protocol() is into_body:
                transport.set_protocol(self._direct_protocol())

    async def _await_body(self, timeout: float | None) -> None:
        """Wait for more of the body; raise what ended it early (a protocol error, the server
        gone, the timeout)."""
        if self._error is not None:
            raise self._error
        if self.closed:
            raise httpx.RemoteProtocolError("Server disconnected during the response body.")
        if not await self._wait(timeout):
            raise httpx.ReadTimeout("Timed out reading the response body.")

    def _taken(self, size: int) -> None:
        """The reader took ``size`` queued bytes: reading resumes below the low mark."""
        self._buffered -= size
        if self._reading_paused and self._buffered < _RESUME_BELOW and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    def release(self) -> None:
        """Mark the connection idle after its response was fully consumed."""
        self.requests_served += 1
        self._state = _IDLE
        self._body.clear()
        self._buffered = 0
        if self._reading_paused:
            # The body completed while reading was paused and was then dropped unread.
            self._reading_paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        self.idle_since = time.monotonic()
