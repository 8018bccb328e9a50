"""uvicorn's httptools protocol with the limits of a public server.

httptools has no limit on the request head, and it joins a header's pieces by copying, so a
128 MiB header costs seconds of CPU before any of our code runs; uvicorn also keeps a connection
that never sends a request open forever. This protocol adds, per connection:

- a cap on the bytes of the request head (its line and header fields), answered 431; also
  counted as the bytes arrive, so that an endless head is cut off at most one read past it;
- a deadline for the request head, from the connection or from the first byte of a later
  request; a stalled request body is closed after the idle timeout (uvicorn's keep-alive
  timeout covers the time between requests);
- a cap on open connections: one past it is answered 503 with ``Retry-After``;
- its own answers (400, 431, 503) in the API's error shape, with a request id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..config import Limits
from ..connections import LINGER_SECONDS, ConnectionSlots, linger
from ..errors import ErrorType
from ..logs import logger
from .errors import error_json

__all__ = ["LimitedHttpProtocol", "limited_http_protocol"]

_RETRY_AFTER_SECONDS = b"1"
_REQUEST_LINE_EXTRA = len(b"  HTTP/1.1\r\n")
_HEADER_LINE_EXTRA = len(b": \r\n")


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limit."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with ``limits``; one ``slots`` object per listening port.

    Made for one server by :func:`limited_http_protocol`.
    """

    limits: Limits
    slots: ConnectionSlots

    _has_slot = False
    _lingering = False
    """Answered and refused: what still comes is dropped until the connection closes."""
    _reading_head = True
    """Between requests or in a request head (not in a body)."""
    _in_head = False
    """In a request head: its first byte came, its end not yet."""
    _head_bytes = 0
    """Bytes received since the current head began (at most one read short)."""
    _head_counted = True
    """Whether ``_head_bytes`` counts all of the current head: it began at the start of a read
    (not after another request in the same read), so it is no longer than ``_head_bytes``."""
    _completed_in_read = False
    _head_too_large = False
    _timer: asyncio.TimerHandle | None = None
    """The head deadline, or for a refused connection the grace before it is closed."""
    _body_timer: asyncio.TimerHandle | None = None
    _last_body_at = 0.0

    # Connection lifecycle

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._has_slot = self.slots.acquire()
        if self._has_slot:
            self._start_head_timer()
        else:
            self._timer = self.loop.call_later(LINGER_SECONDS, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._has_slot:
            self._has_slot = False
            self.slots.release()
        for timer in (self._timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._body_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if not self._has_slot:
            self._refuse(
                503,
                "unavailable",
                "The server is at its connection limit; retry later",
                [(b"retry-after", _RETRY_AFTER_SECONDS)],
            )
            return
        self._unset_keepalive_if_required()
        self._completed_in_read = False
        if self._reading_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if self._head_too_large:
                self._refuse_large_head()
            else:
                self._refuse(400, "invalid_request", f"Invalid HTTP request: {exc}")
            return
        if self._reading_head:
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse_large_head()
            elif self._in_head and self._timer is None:  # a head that spans reads
                self._start_head_timer()
        elif self._body_pending():
            self._last_body_at = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self.limits.http_idle_timeout_seconds, self._check_body
                )

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_counted = not self._completed_in_read

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        limit = self.limits.max_header_bytes
        # Most heads arrive whole at the start of a read no longer than the limit: nothing to
        # add up. Otherwise the head's size, as sent without optional whitespace.
        if not self._head_counted or self._head_bytes > limit:
            size = (
                len(self.parser.get_method())
                + len(self.url)
                + sum(len(name) + len(value) for name, value in self.headers)
                + _REQUEST_LINE_EXTRA
                + _HEADER_LINE_EXTRA * len(self.headers)
                + len(b"\r\n")
            )
            if size > limit:
                self._head_too_large = True
                raise _HeadTooLarge
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._head_bytes = 0
        self._completed_in_read = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # Limits

    def _start_head_timer(self) -> None:
        self._timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_late)

    def _head_late(self) -> None:
        self._timer = None
        if self._reading_head and not self.transport.is_closing():
            logger.debug(
                "Closing a connection from %s: no complete request head in %g s",
                self._peer(),
                self.limits.header_timeout_seconds,
            )
            self.transport.close()

    def _body_pending(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete

    def _check_body(self) -> None:
        self._body_timer = None
        if not self._body_pending() or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the application has not read what came: not the client's
            self._last_body_at = now
        idle = now - self._last_body_at
        timeout = self.limits.http_idle_timeout_seconds
        if idle < timeout:
            self._body_timer = self.loop.call_later(timeout - idle, self._check_body)
            return
        logger.debug("Closing a connection from %s: its request body stalled", self._peer())
        self.transport.close()

    def _refuse_large_head(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(
            431,
            "invalid_request",
            f"The request line and header fields exceed {limit} bytes",
        )

    def _refuse(
        self,
        status: int,
        error_type: ErrorType,
        message: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer ``status`` in the API's error shape, then close the connection (lingering)."""
        if self.transport.is_closing() or self._lingering:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self._reading_head:
                # A pipelined request went wrong while the one before it is being answered: an
                # answer now would come first. Finish that one and close; the client sends what
                # was not answered again, on a new connection.
                cycle.keep_alive = False
                self.flow.pause_reading()
                return
            if cycle.response_started:  # the body of a request being answered went wrong
                self.transport.close()
                return
        request_id = uuid.uuid4().hex
        body = error_json(error_type, message, request_id)
        head = [STATUS_LINE[status]]
        for name, value in (
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            *headers,
            (b"connection", b"close"),
        ):
            head += [name, b": ", value, b"\r\n"]
        head += [b"\r\n", body]
        self.transport.write(b"".join(head))
        self._lingering = True
        for timer in (self._timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._body_timer = None
        self._timer = linger(self.transport)
        if status == 503:
            return  # the connection slots report refusals, at a bounded rate
        logger.info(
            "Refused a request from %s -> %d: %s (request %s)",
            self._peer(),
            status,
            message,
            request_id,
        )

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"


def limited_http_protocol(limits: Limits, slots: ConnectionSlots) -> type[LimitedHttpProtocol]:
    """The protocol class for one server's uvicorn ``Config(http=...)``."""

    class ServerHttpProtocol(LimitedHttpProtocol):
        pass

    ServerHttpProtocol.limits = limits
    ServerHttpProtocol.slots = slots
    return ServerHttpProtocol
