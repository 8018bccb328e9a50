"""AsyncioTransport against scripted raw TCP servers that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import httpx
import pytest

from aiosdk._core.http11 import AsyncioTransport

from .conftest import Handler, ScriptedServer, read_request

pytestmark = pytest.mark.anyio

Start = Callable[[Handler], Awaitable[ScriptedServer]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def client(**options: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AsyncioTransport(**options))  # type: ignore[arg-type]


def replying(*responses: bytes, close: bool = False) -> Handler:
    """Answer successive requests on a connection with ``responses``."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        for response in responses:
            await read_request(reader, server)
            writer.write(response)
            await writer.drain()
        if not close:
            await reader.read()

    return handler


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "Malformed HTTP response"),
        (b"HELLO WORLD\r\n\r\n", "Malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "Malformed HTTP response"),
    ],
)
async def test_malformed_response(scripted: Start, response: bytes, message: str) -> None:
    server = await scripted(replying(response))
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match=message) as info:
            await http.get(server.url)
    assert info.value.request.url == server.url


async def test_incomplete_body_is_a_protocol_error(scripted: Start) -> None:
    server = await scripted(
        replying(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..", close=True)
    )
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="complete body"):
            await http.get(server.url)


async def test_body_read_until_close(scripted: Start) -> None:
    server = await scripted(replying(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True))
    async with client() as http:
        response = await http.get(server.url)
        assert response.content == b"until the end"
        # The connection ended with the body, so the next request opens another.
        server_next = await scripted(replying(OK))
        assert (await http.get(server_next.url)).content == b"ok"


async def test_informational_response_is_skipped(scripted: Start) -> None:
    server = await scripted(replying(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    async with client() as http:
        response = await http.get(server.url)
    assert (response.status_code, response.content) == (200, b"ok")


async def test_server_closing_idle_connection_is_not_surfaced(scripted: Start) -> None:
    # Each connection serves one response, then the server closes it while idle.
    server = await scripted(replying(OK, close=True))
    async with client() as http:
        for _ in range(3):
            assert (await http.get(server.url)).content == b"ok"
            await anyio.sleep(0.02)
    assert server.connections == 3


async def test_stale_connection_is_retried_once_on_a_new_connection(scripted: Start) -> None:
    # The server reads the second request on a kept-alive connection and drops it
    # without answering: the race of a server closing an idle connection.
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(OK)
        if server.connections == 1:
            await read_request(reader, server)
        else:
            await reader.read()

    server = await scripted(handler)
    async with client() as http:
        assert (await http.get(server.url)).content == b"ok"
        assert (await http.get(server.url)).content == b"ok"
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_no_response_on_a_fresh_connection_is_not_resent(scripted: Start) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)

    server = await scripted(handler)
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.post(server.url, content=b"once")
    assert len(server.requests) == 1


async def test_streamed_body_is_not_resent_on_a_stale_connection(scripted: Start) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(OK)
        await reader.readuntil(b"\r\n\r\n")

    async def body() -> AsyncIterator[bytes]:
        yield b"streamed"

    server = await scripted(handler)
    async with client() as http:
        await http.get(server.url)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url, content=body())
    assert server.connections == 1


async def test_reset_mid_body_is_a_read_error(scripted: Start) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    server = await scripted(handler)
    async with client() as http:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await http.get(server.url)


async def test_read_timeout_mid_body(scripted: Start) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        await reader.read()

    server = await scripted(handler)
    async with client() as http, http.stream("GET", server.url, timeout=0.1) as response:
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()
    await asyncio.wait_for(server.closed.wait(), 2)


async def test_write_timeout(scripted: Start) -> None:
    async def never_reads(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await asyncio.sleep(10)

    async def body() -> AsyncIterator[bytes]:
        chunk = b"w" * (1 << 20)
        for _ in range(256):
            yield chunk

    server = await scripted(never_reads)
    async with client() as http:
        with pytest.raises(httpx.WriteTimeout):
            await http.post(server.url, content=body(), timeout=httpx.Timeout(5, write=0.2))


@pytest.fixture
def unresponsive_address() -> Iterator[tuple[str, int]]:
    """A listening socket whose accept queue is full, so new connects hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(address)
        fillers.append(filler)
    try:
        yield address
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout(unresponsive_address: tuple[str, int]) -> None:
    host, port = unresponsive_address
    async with client() as http:
        with pytest.raises(httpx.ConnectTimeout):
            await http.get(f"http://{host}:{port}/", timeout=httpx.Timeout(5, connect=0.2))


async def test_cancellation_mid_body_leaks_nothing(scripted: Start) -> None:
    async def endless(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        while True:
            writer.write(b"b" * 4096)
            await writer.drain()
            await asyncio.sleep(0.005)

    server = await scripted(endless)
    received = 0
    async with client() as http:
        with anyio.move_on_after(0.2) as scope:
            async with http.stream("GET", server.url) as response:
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
        assert scope.cancelled_caught
        assert received > 0
        # The client closed its end: the server sees the connection go away.
        await asyncio.wait_for(server.closed.wait(), 2)
        assert server.open_connections == 0
        reply = await scripted(replying(OK))
        assert (await http.get(reply.url)).content == b"ok"


async def test_cancellation_while_waiting_for_headers(scripted: Start) -> None:
    async def silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        await reader.read()

    server = await scripted(silent)
    async with client() as http:
        with anyio.move_on_after(0.1):
            await http.get(server.url)
        await asyncio.wait_for(server.closed.wait(), 2)


async def test_transport_close_closes_every_connection(scripted: Start) -> None:
    server = await scripted(replying(OK, OK))
    transport = AsyncioTransport()
    http = httpx.AsyncClient(transport=transport)
    await asyncio.gather(*(http.get(server.url) for _ in range(3)))
    assert server.open_connections == 3
    await http.aclose()
    for _ in range(100):
        if server.open_connections == 0:
            break
        await asyncio.sleep(0.01)
    assert server.open_connections == 0


async def test_many_stale_connections_cost_one_resend_at_most(scripted: Start) -> None:
    # Twenty kept-alive connections; then the server goes bad: it reads every request and
    # closes without answering. One idempotent request used to be sent once per stale
    # pooled connection (21 times), outside any retry policy; now: once, then once more on a
    # new connection, and the failure is the caller's (the retry policy's) to handle.
    bad = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        while True:
            await read_request(reader, server)
            if bad.is_set():
                return
            await asyncio.sleep(0.05)  # slow enough that the twenty overlap
            writer.write(OK)

    server = await scripted(handler)
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
    async with client(limits=limits) as http:
        await asyncio.gather(*(http.get(server.url) for _ in range(20)))
        assert server.connections == 20
        bad.set()
        before = len(server.requests)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url)
    assert len(server.requests) - before == 2
    assert server.connections == 21


async def test_a_closed_transport_opens_nothing_and_fails_waiters(scripted: Start) -> None:
    # One request in flight on a reused connection and one queued for the only slot when the
    # transport closes: both fail, neither is resent or connects anew, and the transport stays
    # closed (before, the in-flight GET took the resend path and succeeded after the close).
    answer = asyncio.Event()
    answer.set()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        while True:
            await read_request(reader, server)
            await answer.wait()
            writer.write(OK)

    server = await scripted(handler)
    transport = AsyncioTransport(limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get(server.url)).content == b"ok"  # a kept-alive connection
        answer.clear()
        in_flight = asyncio.ensure_future(http.get(server.url))
        queued = asyncio.ensure_future(http.get(server.url))
        for _ in range(500):
            if len(server.requests) == 2:
                break
            await asyncio.sleep(0.01)
        await transport.aclose()
        results = await asyncio.gather(in_flight, queued, return_exceptions=True)
        assert all(isinstance(r, httpx.TransportError) for r in results), results
        answer.set()
        with pytest.raises(httpx.ConnectError, match="closed"):
            await transport.handle_async_request(httpx.Request("GET", server.url))
    assert len(server.requests) == 2
    assert server.connections == 1


async def test_an_upload_answered_early_does_not_poison_the_connection(scripted: Start) -> None:
    # The server answers 413 after the head, reads no body, and keeps the connection open: a
    # connection whose request was not fully sent must not carry the next request.
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        server.requests.append(await reader.readuntil(b"\r\n\r\n"))
        if server.connections == 1:
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
            await asyncio.sleep(60)  # the connection stays open; nothing more is read
        else:
            writer.write(OK)
            await reader.read()

    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # 64 MiB: far more than the socket buffers hold
            sent += 1
            yield b"x" * 65536

    server = await scripted(handler)
    async with client() as http:
        response = await http.post(server.url, content=body())
        assert response.status_code == 413
        assert sent < 1000  # the upload stopped when the answer came
        assert (await http.get(server.url)).content == b"ok"
    assert server.connections == 2  # the next request went on a new connection
