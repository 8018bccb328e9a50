"""A gRPC peer that vanishes without a FIN (cable pulled, NAT entry dropped).

Discovery goes to a scripted HTTP server that names a TCP proxy as the gRPC endpoint; the proxy
relays to the real server until it is told to blackhole: from then on it drops every byte both
ways and keeps the connections open. HTTP/2 PING keep-alive must turn that silence into a typed
transport error within seconds, where the call used to wait forever.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

import aiosdk
from aiosdk._core.transport import GRPC_KEEPALIVE_INTERVAL, GRPC_KEEPALIVE_TIMEOUT
from aiosdk.server import ServerThread

from .proxy import TcpProxy
from .scripted import ScriptedServer

pytestmark = pytest.mark.anyio

# Generous: keep-alive notices the dead peer after at most interval + timeout seconds.
NOTICED_WITHIN = 3 * (GRPC_KEEPALIVE_INTERVAL + GRPC_KEEPALIVE_TIMEOUT)


@pytest.fixture
def grpc_proxy(server: ServerThread, scripted: ScriptedServer) -> Iterator[TcpProxy]:
    """A proxy in front of the real gRPC port, named by the scripted server's discovery."""
    relay = TcpProxy(server.grpc_host, server.grpc_port).start()
    scripted.grpc_port = relay.port
    yield relay
    relay.stop()


async def test_a_stream_on_a_vanished_peer_fails_with_a_transport_error(
    server: ServerThread, scripted: ScriptedServer, grpc_proxy: TcpProxy
) -> None:
    received: list[aiosdk.ServerStatus] = []

    async def watch(client: aiosdk.AsyncClient) -> None:
        async for status in client.watch_status(interval=0.2):
            received.append(status)
            if len(received) == 2:
                grpc_proxy.blackhole()

    async with aiosdk.AsyncClient(scripted.url, token=server.admin_token) as client:
        with anyio.fail_after(NOTICED_WITHIN), pytest.raises(aiosdk.TransportError):
            await watch(client)
    assert len(received) >= 2  # the stream worked until the peer went silent


async def test_a_unary_call_on_a_vanished_peer_gets_the_attempt_timeout(
    server: ServerThread, scripted: ScriptedServer, grpc_proxy: TcpProxy
) -> None:
    async with aiosdk.AsyncClient(scripted.url, token=server.admin_token, timeout=1) as client:
        assert (await client.get_status()).version  # the channel is open
        grpc_proxy.blackhole()
        with anyio.fail_after(NOTICED_WITHIN), pytest.raises(aiosdk.TimeoutError):
            await client.with_options(retry_mode="disabled").get_status()
