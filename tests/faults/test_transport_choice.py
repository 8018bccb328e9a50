"""Which HTTP transport carries calls: aiosdk's own on asyncio, httpx's for proxies and HTTP/2."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import aiosdk

from .forward_proxy import ForwardProxy

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    running = ForwardProxy().start()
    yield running
    running.stop()


async def test_calls_go_through_an_http_proxy(server: object, proxy: ForwardProxy) -> None:
    async with aiosdk.AsyncClient(
        server.http_url,  # type: ignore[attr-defined]
        token=server.admin_token,  # type: ignore[attr-defined]
        proxy=proxy.url,
    ) as client:
        assert (await client.server_info()).name == "aiosdk"
        token = await client.tokens.create("via-proxy")
        assert "http=AsyncHTTPTransport" in repr(client)
    assert proxy.targets == [
        f"{server.http_url}/api/v1/",  # type: ignore[attr-defined]
        f"{server.http_url}/api/v1/tokens",  # type: ignore[attr-defined]
    ]
    assert token.label == "via-proxy"


async def test_http2_uses_httpx_transport(server: object) -> None:
    async with aiosdk.AsyncClient(
        server.http_url,  # type: ignore[attr-defined]
        token=server.admin_token,  # type: ignore[attr-defined]
        http2=True,
    ) as client:
        assert (await client.server_info()).name == "aiosdk"  # the server answers HTTP/1.1
        assert "http=AsyncHTTPTransport" in repr(client)


async def test_the_environment_names_a_proxy_and_no_proxy_bypasses_it(
    server: object, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, token = server.http_url, server.admin_token  # type: ignore[attr-defined]
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    async with aiosdk.AsyncClient(url, token=token) as client:
        assert (await client.server_info()).name == "aiosdk"
        assert "http=AsyncHTTPTransport" in repr(client)
    assert proxy.targets == [f"{url}/api/v1/"]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with aiosdk.AsyncClient(url, token=token) as direct:
        assert (await direct.server_info()).name == "aiosdk"
    assert proxy.targets == [f"{url}/api/v1/"]  # the second went direct
