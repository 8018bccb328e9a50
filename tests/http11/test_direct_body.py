"""Large Content-Length bodies, which bypass the parser once their head is parsed."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Awaitable, Callable

import httpx
import pytest

from aiosdk._core.http11 import AsyncioTransport

from .conftest import Handler, ScriptedServer, read_request

pytestmark = pytest.mark.anyio

Start = Callable[[Handler], Awaitable[ScriptedServer]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
MiB = 1024 * 1024


def client(**options: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AsyncioTransport(**options))  # type: ignore[arg-type]


def pattern(size: int) -> bytes:
    """A body in which a lost, repeated or reordered span shows."""
    block = bytes(range(251)) * 4
    return (block * (size // len(block) + 1))[:size]


def head(size: int, *extra: bytes) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % size, *extra, b"", b""]
    return b"\r\n".join(lines)


def in_pieces(response: bytes, cuts: list[int], *, then: bytes = OK) -> Handler:
    """Send ``response`` split at ``cuts``, each piece a separate read; then ``then``."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        for start, end in zip([0, *cuts], [*cuts, len(response)], strict=True):
            writer.write(response[start:end])
            await writer.drain()
            await asyncio.sleep(0.01)
        while True:
            await read_request(reader, server)
            writer.write(then)

    return handler


SIZE = MiB + 7
HEAD = head(SIZE)


@pytest.mark.parametrize(
    "cuts",
    [
        pytest.param([len(HEAD)], id="head-then-body"),
        pytest.param([len(HEAD) - 1, len(HEAD) + 1], id="head-end-split"),
        pytest.param([10, 30], id="head-split-twice"),
        pytest.param([len(HEAD) + 10, len(HEAD) + 65546, len(HEAD) + SIZE - 1], id="odd-spans"),
        pytest.param([len(HEAD) + SIZE - 1], id="last-byte-alone"),
    ],
)
async def test_body_split_at_awkward_boundaries(scripted: Start, cuts: list[int]) -> None:
    body = pattern(SIZE)
    server = await scripted(in_pieces(HEAD + body, cuts))
    async with client() as http:
        async with http.stream("GET", server.url) as response:
            spans = [span async for span in response.aiter_raw()]
        # The connection is kept alive and a fresh parser reads the next response.
        after = await http.get(server.url)
    assert all(type(span) is bytes for span in spans)
    assert b"".join(spans) == body
    assert after.content == b"ok"
    assert server.connections == 1


@pytest.mark.parametrize("left", [65535, 65536, 65537, 65538])
async def test_body_left_after_the_head_read_around_the_threshold(
    scripted: Start, left: int
) -> None:
    # The first read (at most 64 KiB) holds the head and 4 KiB of the body; what is
    # left decides whether the parser or the direct path receives the rest.
    body = pattern(4096 + left)
    response = head(len(body)) + body
    server = await scripted(in_pieces(response, [len(response) - left]))
    async with client() as http:
        first = await http.get(server.url)
        after = await http.get(server.url)
    assert first.content == body
    assert after.content == b"ok"
    assert server.connections == 1


async def test_body_much_larger_than_the_buffer_thresholds(scripted: Start) -> None:
    body = pattern(40 * MiB + 3)
    server = await scripted(in_pieces(head(len(body)) + body, []))
    digest = hashlib.sha256()
    size = 0
    async with client() as http:
        async with http.stream("GET", server.url) as response:
            async for span in response.aiter_bytes():
                digest.update(span)
                size += len(span)
        assert (await http.get(server.url)).content == b"ok"
    assert size == len(body)
    assert digest.digest() == hashlib.sha256(body).digest()
    assert server.connections == 1


async def test_early_close_mid_body_is_a_protocol_error(scripted: Start) -> None:
    response = head(3 * MiB) + pattern(MiB)

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(response[:200])
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(response[200:])
        await writer.drain()

    server = await scripted(handler)
    spans: list[bytes] = []

    async def read_all(streamed: httpx.Response) -> None:
        async for span in streamed.aiter_raw():
            spans.append(span)

    async with client() as http, http.stream("GET", server.url) as streamed:
        with pytest.raises(httpx.RemoteProtocolError, match="complete body") as info:
            await read_all(streamed)
    assert b"".join(spans) == pattern(MiB)
    assert info.value.request.url == server.url


async def test_flow_control_pauses_a_fast_server(scripted: Start) -> None:
    total = 96 * MiB
    piece = b"f" * MiB
    written = 0

    async def fast(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        nonlocal written
        await read_request(reader, server)
        writer.write(head(total))
        while written < total:
            writer.write(piece)
            written += len(piece)
            await writer.drain()
        await reader.read()

    server = await scripted(fast)
    received = 0
    async with client() as http, http.stream("GET", server.url) as response:
        spans = response.aiter_raw()
        received += len(await spans.__anext__())
        await asyncio.sleep(0.3)
        # 8 MiB queued in the client, plus what the kernel's socket buffers hold.
        assert written < 48 * MiB
        async for span in spans:
            received += len(span)
    assert received == total


async def test_body_completed_while_paused_and_left_unread_keeps_the_connection(
    scripted: Start,
) -> None:
    # The read that takes the queue past 8 MiB also ends the body, so reading is
    # paused when the response completes; closing the stream unread must resume it.
    size = 8 * MiB + 1
    server = await scripted(in_pieces(head(size) + b"p" * size, []))
    async with client() as http:
        async with http.stream("GET", server.url):
            await asyncio.sleep(0.3)
        after = await http.get(server.url, timeout=2)
    assert after.content == b"ok"
    assert server.connections == 1


async def test_bytes_after_the_body_make_the_connection_unusable(scripted: Start) -> None:
    body = pattern(MiB)
    response = HEAD.replace(b"%d" % SIZE, b"%d" % len(body)) + body + b"HTTP/1.1 200 OK\r\n"
    server = await scripted(in_pieces(response, [100]))
    async with client() as http:
        first = await http.get(server.url)
        second = await http.get(server.url)
    assert first.content == body
    assert second.content == body
    assert server.connections == 2


async def test_connection_close_response_is_not_reused(scripted: Start) -> None:
    body = pattern(MiB)
    server = await scripted(in_pieces(head(len(body), b"Connection: close") + body, [100]))
    async with client() as http:
        first = await http.get(server.url)
        second = await http.get(server.url)
    assert first.content == second.content == body
    assert server.connections == 2


async def test_large_body_over_tls(tls_server: str, client_ssl_context: ssl.SSLContext) -> None:
    async with client(verify=client_ssl_context) as http:
        first = await http.get(f"{tls_server}/peer")
        large = await http.get(f"{tls_server}/bytes?n=5000000")
        third = await http.get(f"{tls_server}/peer")
    assert large.content == b"a" * 5000000
    assert first.text == third.text
