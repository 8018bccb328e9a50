"""The gRPC server: grpclib, with the services and listeners of the reference server."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Mapping
from typing import Protocol

import anyio
from grpclib.const import Cardinality, Handler
from grpclib.protocol import H2Protocol
from grpclib.server import Server
from h2.settings import SettingCodes

from ..connections import ConnectionSlots
from ..state import ServerState
from .auth import authenticate_calls
from .calls import track_calls
from .catalog import CatalogService
from .channels import ChannelService
from .connection import LimitedConnection
from .messages import RequestCodec
from .sessions import SessionService
from .status import StatusService
from .tokens import TokenService

__all__ = ["MAX_CONCURRENT_STREAMS", "GrpcServer"]

MAX_CONCURRENT_STREAMS = 10_000
"""The streams (calls) one client connection may have open at once, advertised in HTTP/2's
``SETTINGS_MAX_CONCURRENT_STREAMS``. h2's default is 100, which one client holding more than
100 channel connections would reach: an open ``Listen`` stream costs the server a task and a
few small buffers, so a connection may hold thousands (the number of connections is capped
separately, by ``Limits.max_connections``)."""


class GrpcServer(Server):
    """grpclib's server with every service of the reference server, authenticated and tracked,
    within the server's limits (connections, their idle time, message sizes, see
    :class:`~.connection.LimitedConnection` and :mod:`~.messages`).

    Adds :meth:`shutdown`: grpclib's ``close()`` cancels running calls but leaves client
    connections open, and since Python 3.12 ``wait_closed()`` waits for them, so a client
    holding a channel would stall shutdown.
    """

    def __init__(self, state: ServerState) -> None:
        self._closing = asyncio.Event()
        services: list[_Service] = [
            StatusService(state.metrics, self._closing),
            TokenService(state),
            CatalogService(state, self._closing),
            SessionService(state, self._closing),
            ChannelService(state, self._closing),
        ]
        super().__init__(services, codec=RequestCodec())
        limits = state.limits
        assert limits.max_connections is not None
        self._limits = limits
        self._slots = ConnectionSlots(limits.max_connections, "gRPC")
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()
        self._calls = track_calls(
            self, state.metrics, _streaming_methods(services), limits.max_grpc_message_bytes
        )
        authenticate_calls(self, state.authenticator)

    def _protocol_factory(self) -> LimitedConnection:  # type: ignore[override]  # any protocol
        return LimitedConnection(self._serving_protocol, self._limits, self._slots)

    def _serving_protocol(self) -> H2Protocol:
        made = super()._protocol_factory()
        protocol = _ManyStreams(made.handler, made.config, made.h2_config)
        self._protocols.add(protocol)
        return protocol

    async def shutdown(self, grace_period: float) -> None:
        """Stop: end open streams with ``UNAVAILABLE``, give them ``grace_period`` seconds to
        finish, cancel what still runs, close client connections and wait until all is done."""
        self._closing.set()
        with anyio.move_on_after(grace_period):
            await self._calls.wait_streams_closed()
        self.close()
        for protocol in list(self._protocols):
            connection = getattr(protocol, "connection", None)
            if connection is not None:
                connection.close()
        await self.wait_closed()


class _ManyStreams(H2Protocol):
    """grpclib's protocol, advertising :data:`MAX_CONCURRENT_STREAMS`.

    grpclib offers no setting for it and sends h2's defaults as soon as the connection is made,
    so a second SETTINGS frame follows the first at once. h2 applies it when the client
    acknowledges it; the client sends its acknowledgement before any stream it opens on the
    strength of the new value, so the server never sees more streams than it has allowed.
    (grpclib keeps the h2 connection in an attribute of its ``Connection``.)
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connection._connection.update_settings(
            {SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS}
        )
        self.connection.flush()


class _Service(Protocol):
    def __mapping__(self) -> Mapping[str, Handler]: ...


def _streaming_methods(services: Iterable[_Service]) -> list[str]:
    return [
        name
        for service in services
        for name, handler in service.__mapping__().items()
        if handler.cardinality in (Cardinality.UNARY_STREAM, Cardinality.STREAM_STREAM)
    ]
