"""A mutating gRPC call whose reply was lost, against the real server through a TCP proxy.

The server committed the call (a new token) and started to answer; the client saw its connection
reset. A forceful retry carries the same ``idempotency-key``, so the server replays its first
answer instead of minting a second token.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

import aiosdk
from aiosdk.proto import CreateTokenRequest, CreateTokenResponse, TokenServiceStub
from aiosdk.server import ServerThread

from .conftest import RetryLog
from .proxy import TcpProxy
from .scripted import ScriptedServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def grpc_proxy(server: ServerThread, scripted: ScriptedServer) -> Iterator[TcpProxy]:
    """A proxy in front of the real gRPC port, named by the scripted server's discovery."""
    relay = TcpProxy(server.grpc_host, server.grpc_port).start()
    scripted.grpc_port = relay.port
    yield relay
    relay.stop()


@pytest.fixture
async def proxied(
    server: ServerThread, scripted: ScriptedServer, grpc_proxy: TcpProxy
) -> AsyncIterator[aiosdk.AsyncClient]:
    async with aiosdk.AsyncClient(scripted.url, token=server.admin_token) as client:
        await client.get_status()  # the channel is open: the next reply is the call's
        yield client


async def create_token(client: aiosdk.AsyncClient, label: str) -> CreateTokenResponse:
    return await client._ctx.transport.grpc_unary(
        TokenServiceStub,
        lambda stub: stub.create_token(CreateTokenRequest(label=label)),
        idempotent=False,
        options=client.options,
        what="CreateToken",
    )


async def labelled(client: aiosdk.AsyncClient, label: str) -> list[aiosdk.TokenInfo]:
    return [token async for token in client.tokens.list() if token.label == label]


async def test_a_forceful_mutating_call_whose_reply_was_lost_is_applied_once(
    proxied: aiosdk.AsyncClient,
    grpc_proxy: TcpProxy,
    client: aiosdk.AsyncClient,
    retry_log: RetryLog,
) -> None:
    label = f"lost-grpc-{uuid.uuid4().hex}"
    proxied.retry_mode("forceful")
    grpc_proxy.drop_next_grpc_reply()
    reply = await create_token(proxied, label)
    assert grpc_proxy.dropped == 1
    assert retry_log.retries  # the first reply was lost, the call was retried ...
    made = await labelled(client, label)
    assert [token.id for token in made] == [reply.token.id]  # ... and applied once: a replay
    assert reply.secret.startswith("aio_")


async def test_a_lost_reply_is_not_retried_in_default_mode(
    proxied: aiosdk.AsyncClient,
    grpc_proxy: TcpProxy,
    client: aiosdk.AsyncClient,
    retry_log: RetryLog,
) -> None:
    label = f"lost-default-{uuid.uuid4().hex}"
    grpc_proxy.drop_next_grpc_reply()
    with pytest.raises(aiosdk.TransportError):
        await create_token(proxied, label)
    assert not retry_log.retries  # it reached the server: default mode does not try again
    assert len(await labelled(client, label)) == 1  # and the server did apply it
