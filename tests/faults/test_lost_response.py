"""A response lost on the way back, against the real server through a TCP proxy.

The server applied the request; the client saw its connection reset. A forceful retry carries the
same ``Idempotency-Key``, so the server replays its first answer instead of applying it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

import aiosdk
from aiosdk.server import ServerThread

from .proxy import TcpProxy

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxy(server: ServerThread) -> Iterator[TcpProxy]:
    """A proxy in front of the session's reference server."""
    address = urlsplit(server.http_url)
    assert address.hostname is not None
    assert address.port is not None
    relay = TcpProxy(address.hostname, address.port).start()
    yield relay
    relay.stop()


def proxied_client(proxy: TcpProxy, server: ServerThread, mode: str) -> aiosdk.AsyncClient:
    return aiosdk.AsyncClient(proxy.url, token=server.admin_token, retry_mode=mode)


async def tokens_labelled(client: aiosdk.AsyncClient, label: str) -> list[aiosdk.TokenInfo]:
    return [token async for token in client.tokens.list() if token.label == label]


async def test_forceful_post_whose_response_was_lost_is_applied_once(
    proxy: TcpProxy, server: ServerThread, client: aiosdk.AsyncClient
) -> None:
    label = f"lost-{uuid.uuid4().hex}"
    async with proxied_client(proxy, server, "forceful") as through_proxy:
        await through_proxy.server_info()  # warm the pool: the drop hits the POST's response
        proxy.drop_next_response()
        created = await through_proxy.tokens.create(label)
    assert proxy.dropped == 1
    assert created.label == label
    listed = await tokens_labelled(client, label)
    assert [token.id for token in listed] == [created.id]  # the retry got the first's replay
    await client.tokens.revoke(created.id)  # leave the shared server as it was


async def test_default_post_whose_response_was_lost_is_not_retried(
    proxy: TcpProxy, server: ServerThread, client: aiosdk.AsyncClient
) -> None:
    label = f"lost-{uuid.uuid4().hex}"
    async with proxied_client(proxy, server, "default") as through_proxy:
        proxy.drop_next_response()
        with pytest.raises(aiosdk.ProtocolError) as caught:
            await through_proxy.tokens.create(label)
    assert caught.value.request_sent
    assert proxy.dropped == 1
    (applied,) = await tokens_labelled(client, label)  # applied, though the client can't tell
    await client.tokens.revoke(applied.id)


async def test_default_get_whose_response_was_lost_is_retried(
    proxy: TcpProxy, server: ServerThread
) -> None:
    async with proxied_client(proxy, server, "default") as through_proxy:
        proxy.drop_next_response()
        info = await through_proxy.server_info()
    assert proxy.dropped == 1
    assert info.api_version == "v1"


async def test_disabled_get_whose_response_was_lost_raises(
    proxy: TcpProxy, server: ServerThread
) -> None:
    async with proxied_client(proxy, server, "disabled") as through_proxy:
        proxy.drop_next_response()
        with pytest.raises(aiosdk.ProtocolError):
            await through_proxy.server_info()
    assert proxy.dropped == 1
