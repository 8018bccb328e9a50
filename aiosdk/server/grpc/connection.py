"""One gRPC client connection within the server's limits, around grpclib's protocol.

grpclib keeps a connection open as long as the client does, calls or not, and accepts every
connection. :class:`LimitedConnection` adds:

- a cap on open connections: one past it gets a GOAWAY (``ENHANCE_YOUR_CALM``, no stream
  processed, so any client may retry it elsewhere) and is closed;
- a deadline for the first call (``header_timeout_seconds``), for connections that never
  send one;
- an idle timeout: a connection without a call for ``grpc_idle_timeout_seconds`` (checked at
  that interval, so closed after one to two of them) gets a GOAWAY (``NO_ERROR``) and is
  closed; clients reconnect on their next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import h2.config
import h2.connection
from grpclib.protocol import H2Protocol
from h2.errors import ErrorCodes

from ..config import Limits
from ..connections import LINGER_SECONDS, ConnectionSlots, linger
from ..logs import logger

__all__ = ["LimitedConnection"]


def _refusal() -> bytes:
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    connection.close_connection(
        error_code=ErrorCodes.ENHANCE_YOUR_CALM, additional_data=b"connection limit reached"
    )
    return connection.data_to_send()


_REFUSAL = _refusal()
"""The server's preface and a GOAWAY before any stream: what a refused connection gets."""


class LimitedConnection(asyncio.Protocol):
    """A client connection: ``make_protocol()`` (grpclib's) serves it when a slot is free."""

    def __init__(
        self, make_protocol: Callable[[], H2Protocol], limits: Limits, slots: ConnectionSlots
    ) -> None:
        self._make_protocol = make_protocol
        self._limits = limits
        self._slots = slots
        self._protocol: H2Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._calls_seen = 0
        self._was_idle = True
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        if not self._slots.acquire():
            self._timer = loop.call_later(LINGER_SECONDS, transport.close)
            return
        self._protocol = self._make_protocol()
        self._protocol.connection_made(transport)
        self._timer = loop.call_later(self._limits.header_timeout_seconds, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._protocol is not None:
            self._protocol.data_received(data)
        elif not self._refused and self._transport is not None:
            self._refused = True  # answered once the client has sent something: see linger()
            self._transport.write(_REFUSAL)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = linger(self._transport)

    def pause_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._protocol is not None:
            self._slots.release()
            self._protocol.connection_lost(exc)

    def _check_idle(self) -> None:
        """Close the connection if it had no call since the last check and has none now."""
        assert self._protocol is not None
        started = self._protocol.connection.streams_started
        idle = not self._protocol.processor.streams
        if idle and self._was_idle and started == self._calls_seen:
            self._close_idle()
            return
        self._calls_seen, self._was_idle = started, idle
        self._timer = asyncio.get_running_loop().call_later(
            self._limits.grpc_idle_timeout_seconds, self._check_idle
        )

    def _close_idle(self) -> None:
        assert self._protocol is not None
        connection = self._protocol.connection
        if connection.is_closing():
            return
        logger.debug("Closing an idle gRPC connection from %s", connection.get_peer().addr())
        # grpclib's Connection keeps the h2 state machine private; a GOAWAY tells the client
        # that the connection ends and that no call of its was dropped.
        connection._connection.close_connection(error_code=ErrorCodes.NO_ERROR)
        connection.flush()
        connection.close()
