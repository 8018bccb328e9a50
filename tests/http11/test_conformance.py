"""AsyncioTransport against a real uvicorn server: bodies, methods, keep-alive, TLS."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import trustme

from aiosdk._core.http11 import AsyncioTransport, fast_transport_supported

from .conftest import LARGE_HEADER

pytestmark = pytest.mark.anyio


def client(**options: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AsyncioTransport(**options))  # type: ignore[arg-type]


async def test_content_length_body(asgi_server: str) -> None:
    async with client() as http:
        response = await http.get(f"{asgi_server}/bytes?n=100000")
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "OK"
    assert response.headers["content-length"] == "100000"
    assert response.content == b"a" * 100000


async def test_chunked_body(asgi_server: str) -> None:
    async with client() as http:
        response = await http.get(f"{asgi_server}/chunked?parts=50")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"".join(str(i).encode() * 1000 for i in range(50))


async def test_streamed_spans_are_not_rechunked(asgi_server: str) -> None:
    async with client() as http, http.stream("GET", f"{asgi_server}/bytes?n=3000000") as response:
        sizes = [len(chunk) async for chunk in response.aiter_raw()]
    assert sum(sizes) == 3000000
    # Whole receive-buffer spans, far fewer than httpcore's 64 KiB pieces would give.
    assert len(sizes) < 3000000 // 65536


async def test_head_has_no_body_and_connection_is_reused(asgi_server: str) -> None:
    async with client() as http:
        head = await http.head(f"{asgi_server}/bytes?n=5000")
        first = await http.get(f"{asgi_server}/peer")
        second = await http.get(f"{asgi_server}/peer")
    assert head.status_code == 200
    assert head.headers["content-length"] == "5000"
    assert head.content == b""
    assert first.text == second.text


@pytest.mark.parametrize("code", [204, 304])
async def test_no_body_statuses(asgi_server: str, code: int) -> None:
    async with client() as http:
        response = await http.get(f"{asgi_server}/status?code={code}")
        after = await http.get(f"{asgi_server}/bytes?n=10")
    assert response.status_code == code
    assert response.content == b""
    assert after.content == b"a" * 10


async def test_streamed_upload_uses_chunked_encoding(asgi_server: str) -> None:
    chunks = [bytes([i % 251]) * 70000 for i in range(40)]

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async with client() as http:
        response = await http.post(f"{asgi_server}/upload", content=body())
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert response.text == f"{len(chunks) * 70000} {digest} chunked"


async def test_bytes_upload_uses_content_length(asgi_server: str) -> None:
    payload = b"p" * 300000
    async with client() as http:
        response = await http.put(f"{asgi_server}/upload", content=payload)
    assert response.text == f"300000 {hashlib.sha256(payload).hexdigest()} -"


async def test_keep_alive_reuses_the_connection(asgi_server: str) -> None:
    async with client() as http:
        ports = {(await http.get(f"{asgi_server}/peer")).text for _ in range(5)}
    assert len(ports) == 1


async def test_keep_alive_expiry_opens_a_new_connection(asgi_server: str) -> None:
    limits = httpx.Limits(keepalive_expiry=0.1)
    async with client(limits=limits) as http:
        first = (await http.get(f"{asgi_server}/peer")).text
        await anyio.sleep(0.25)
        second = (await http.get(f"{asgi_server}/peer")).text
    assert first != second


async def test_connection_close_request_header_is_honoured(asgi_server: str) -> None:
    async with client() as http:
        first = await http.get(f"{asgi_server}/peer", headers={"Connection": "close"})
        second = await http.get(f"{asgi_server}/peer")
    assert first.text != second.text


async def test_concurrent_requests_over_a_small_pool(asgi_server: str) -> None:
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    ports: list[str] = []

    async def one() -> None:
        response = await http.get(f"{asgi_server}/peer", timeout=httpx.Timeout(10))
        assert response.status_code == 200
        ports.append(response.text)

    async with client(limits=limits) as http, anyio.create_task_group() as tasks:
        for _ in range(300):
            tasks.start_soon(one)
    assert len(ports) == 300
    assert len(set(ports)) <= 10


async def test_early_close_of_streamed_response_discards_the_connection(asgi_server: str) -> None:
    async with client() as http:
        async with http.stream("GET", f"{asgi_server}/stream?parts=200") as response:
            first = (await http.get(f"{asgi_server}/peer")).text  # a second connection
            async for _ in response.aiter_raw():
                break
        second = (await http.get(f"{asgi_server}/peer")).text
        third = (await http.get(f"{asgi_server}/peer")).text
    # The peer connection went back to the pool; the half-read one was closed.
    assert first == second == third


async def test_large_headers_both_ways(asgi_server: str) -> None:
    async with client() as http:
        response = await http.get(f"{asgi_server}/large-header", headers={"X-Large": LARGE_HEADER})
    assert response.text == str(len(LARGE_HEADER))
    assert response.headers["x-large"] == LARGE_HEADER


async def test_read_timeout(asgi_server: str) -> None:
    async with client() as http:
        with pytest.raises(httpx.ReadTimeout) as info:
            await http.get(f"{asgi_server}/slow?delay=1", timeout=httpx.Timeout(5, read=0.1))
        assert info.value.request.url.path == "/slow"
        assert (await http.get(f"{asgi_server}/bytes?n=3")).content == b"aaa"


async def test_pool_timeout(asgi_server: str) -> None:
    limits = httpx.Limits(max_connections=1)
    async with client(limits=limits) as http:
        async with http.stream("GET", f"{asgi_server}/stream?parts=10"):
            with pytest.raises(httpx.PoolTimeout):
                await http.get(f"{asgi_server}/peer", timeout=httpx.Timeout(5, pool=0.1))
        # The connection is free again once the stream is closed.
        again = await http.get(f"{asgi_server}/bytes?n=1", timeout=httpx.Timeout(5, pool=0.5))
        assert again.content == b"a"


async def test_tls_with_local_ca(tls_server: str, client_ssl_context: ssl.SSLContext) -> None:
    async with client(verify=client_ssl_context) as http:
        first = await http.get(f"{tls_server}/peer")
        second = await http.get(f"{tls_server}/bytes?n=200000")
        third = await http.get(f"{tls_server}/peer")
    assert second.content == b"a" * 200000
    assert first.text == third.text


async def test_tls_untrusted_certificate_is_a_connect_error(tls_server: str) -> None:
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    async with client(verify=other) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(f"{tls_server}/peer")


async def test_connect_error_for_a_closed_port() -> None:
    from .conftest import free_port

    async with client() as http:
        with pytest.raises(httpx.ConnectError) as info:
            await http.get(f"http://127.0.0.1:{free_port()}/")
    assert info.value.request.url.host == "127.0.0.1"


async def test_unsupported_scheme() -> None:
    async with httpx.AsyncClient(transport=AsyncioTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/")


async def test_header_injection_is_a_local_protocol_error(asgi_server: str) -> None:
    async with client() as http:
        with pytest.raises(httpx.LocalProtocolError):
            await http.get(f"{asgi_server}/peer", headers={"X-Evil": "a\r\nX-Injected: 1"})


async def test_repr_and_support_helper() -> None:
    transport = AsyncioTransport(
        limits=httpx.Limits(max_connections=7, max_keepalive_connections=3)
    )
    assert repr(transport) == "<AsyncioTransport max_connections=7 keepalive=3>"
    assert fast_transport_supported()
    await transport.aclose()


async def test_support_helper_outside_an_event_loop() -> None:
    assert not await anyio.to_thread.run_sync(fast_transport_supported)


async def test_cancelled_pool_waiter_does_not_lose_the_connection(asgi_server: str) -> None:
    limits = httpx.Limits(max_connections=1)
    async with client(limits=limits) as http:
        peer = (await http.get(f"{asgi_server}/peer")).text
        async with http.stream("GET", f"{asgi_server}/bytes?n=10") as response:
            with anyio.move_on_after(0.05):
                await http.get(f"{asgi_server}/peer")  # queued behind the open stream
            await response.aread()
        # The single slot is free again and the kept-alive connection is reused.
        again = await http.get(f"{asgi_server}/peer", timeout=httpx.Timeout(5, pool=1))
        assert again.text == peer
