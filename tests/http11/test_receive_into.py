"""Bodies received straight into the reader's buffer (``ResponseStream.receive_into``), on
asyncio's event loop and on uvloop's."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import ssl

import httpx
import pytest

from aiosdk._core.http11 import AsyncioTransport
from aiosdk._core.http11.streams import ResponseStream

from .conftest import ScriptedServer, read_request
from .test_direct_body import MiB, Start, head, in_pieces, pattern

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """asyncio's own loop, and uvloop's (its transports are not asyncio's classes)."""
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


async def open_stream(transport: AsyncioTransport, url: str) -> ResponseStream:
    response = await transport.handle_async_request(httpx.Request("GET", url))
    assert response.status_code == 200
    stream = response.stream
    assert isinstance(stream, ResponseStream)
    return stream


async def receive_all(stream: ResponseStream, buffer: memoryview) -> list[int]:
    """Fill ``buffer`` from the stream until it is full or the body ends; the sizes returned."""
    sizes: list[int] = []
    filled = 0
    while filled < len(buffer):
        size = await stream.receive_into(buffer[filled:])
        if not size:
            break
        sizes.append(size)
        filled += size
    return sizes


SIZE = 3 * MiB + 5
HEAD = head(SIZE)


@pytest.mark.parametrize(
    "cuts",
    [
        pytest.param([len(HEAD)], id="head-then-body"),
        pytest.param([len(HEAD) + 10, len(HEAD) + 65546, len(HEAD) + SIZE - 1], id="odd-spans"),
        pytest.param([len(HEAD) + SIZE - 1], id="last-byte-alone"),
        pytest.param([], id="all-at-once"),
    ],
)
async def test_the_body_lands_in_the_buffer_and_the_connection_is_kept(
    scripted: Start, cuts: list[int]
) -> None:
    body = pattern(SIZE)
    server = await scripted(in_pieces(HEAD + body, cuts))
    data = bytearray(SIZE)
    async with AsyncioTransport() as transport:
        stream = await open_stream(transport, server.url)
        sizes = await receive_all(stream, memoryview(data))
        assert await stream.receive_into(memoryview(bytearray(1))) == 0  # the body is complete
        async with httpx.AsyncClient(transport=transport) as http:
            after = await http.get(server.url)
    assert data == body
    assert sum(sizes) == SIZE
    assert all(size > 0 for size in sizes)
    assert after.content == b"ok"
    assert server.connections == 1  # the connection went back to the pool


async def test_the_rest_of_a_body_longer_than_the_buffer_comes_as_spans(scripted: Start) -> None:
    body = pattern(SIZE)
    server = await scripted(in_pieces(HEAD + body, [len(HEAD) + 1000, len(HEAD) + MiB]))
    data = bytearray(MiB + 1)
    async with AsyncioTransport() as transport:
        stream = await open_stream(transport, server.url)
        await receive_all(stream, memoryview(data))
        before = bytes(data)
        rest = [span async for span in stream]
    assert data == before  # nothing was written into the buffer once it was full
    assert bytes(data) + b"".join(rest) == body


async def test_two_reads_before_the_reader_wakes_go_one_after_the_other(scripted: Start) -> None:
    # As when the event loop reads the socket twice before the waiting reader runs: the
    # connection's protocol is fed the way asyncio feeds a buffered protocol, twice in a row.
    body = pattern(SIZE)
    gate = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(HEAD + body[:1000])
        await gate.wait()
        writer.write(body[-1000:])
        await reader.read()

    server = await scripted(handler)
    data = bytearray(SIZE)
    view = memoryview(data)
    async with AsyncioTransport() as transport:
        stream = await open_stream(transport, server.url)
        first = await receive_all(stream, view[:1000])  # what came with the head, copied
        reader = asyncio.ensure_future(stream.receive_into(view[1000:]))
        await asyncio.sleep(0)  # the reader waits, the socket now reads into its buffer
        conn = stream._conn
        assert conn is not None
        assert conn._transport is not None
        protocol = conn._transport.get_protocol()
        assert isinstance(protocol, asyncio.BufferedProtocol)
        middle = body[1000:-1000]
        for piece in (middle[: MiB + 3], middle[MiB + 3 :]):
            target = memoryview(protocol.get_buffer(-1))
            target[: len(piece)] = piece
            protocol.buffer_updated(len(piece))
        assert await reader == len(middle)  # both reads, in order, in one wake-up
        gate.set()
        last = await receive_all(stream, view[SIZE - 1000 :])
    assert sum(first) == 1000
    assert sum(last) == 1000
    assert data == body


async def test_spans_after_a_receive_into_come_from_the_queue_again(scripted: Start) -> None:
    body = pattern(SIZE)
    gate = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(HEAD)
        await gate.wait()
        writer.write(body[1000:])
        await reader.read()

    server = await scripted(handler)
    data = bytearray(SIZE)
    async with AsyncioTransport() as transport:
        stream = await open_stream(transport, server.url)
        reader = asyncio.ensure_future(stream.receive_into(memoryview(data)))
        await asyncio.sleep(0)
        conn = stream._conn
        assert conn is not None
        assert conn._transport is not None
        protocol = conn._transport.get_protocol()
        assert isinstance(protocol, asyncio.BufferedProtocol)
        memoryview(protocol.get_buffer(-1))[:1000] = body[:1000]  # one read, as asyncio's
        protocol.buffer_updated(1000)
        assert await reader == 1000
        gate.set()
        rest = [span async for span in stream]
    assert data[:1000] == body[:1000]
    assert not any(data[1000:])  # the rest never went into the buffer
    assert b"".join(rest) == body[1000:]


async def test_bytes_fed_on_after_the_buffer_is_full_are_queued(scripted: Start) -> None:
    # Python 3.10's SSL transport feeds all of a decrypted read to the protocol it began
    # with (asyncio.protocols._feed_data_to_buffered_proto): what is left once the reader's
    # buffer is full still reaches the connection, queued for the next read.
    body = pattern(SIZE)
    gate = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(HEAD)
        await gate.wait()
        writer.write(body[1500:])
        await reader.read()

    server = await scripted(handler)
    data = bytearray(1000)
    async with AsyncioTransport() as transport:
        stream = await open_stream(transport, server.url)
        reader = asyncio.ensure_future(stream.receive_into(memoryview(data)))
        await asyncio.sleep(0)
        conn = stream._conn
        assert conn is not None
        assert conn._transport is not None
        protocol = conn._transport.get_protocol()
        assert isinstance(protocol, asyncio.BufferedProtocol)
        asyncio.protocols._feed_data_to_buffered_proto(protocol, body[:1500])  # type: ignore[attr-defined]
        assert await reader == 1000
        gate.set()
        rest = [span async for span in stream]
    assert data == body[:1000]
    assert b"".join(rest) == body[1000:]


async def test_a_body_cut_short_raises_after_what_arrived(scripted: Start) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(head(3 * MiB) + pattern(MiB))
        await writer.drain()

    server = await scripted(handler)
    data = bytearray(3 * MiB)
    view = memoryview(data)
    filled = 0

    async def receive_until_it_fails(stream: ResponseStream) -> None:
        nonlocal filled
        while True:
            filled += await stream.receive_into(view[filled:])

    async with AsyncioTransport() as transport:
        stream = await open_stream(transport, server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="complete body") as info:
            await receive_until_it_fails(stream)
        assert await stream.receive_into(view[filled:]) == 0  # the connection is gone
    assert filled == MiB
    assert data[:MiB] == pattern(MiB)
    assert info.value.request.url == server.url


async def test_a_cancelled_reader_leaves_no_view_of_its_buffer(scripted: Start) -> None:
    stalled = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        await read_request(reader, server)
        writer.write(head(8 * MiB) + pattern(2 * MiB))
        await writer.drain()
        stalled.set()
        await reader.read()

    server = await scripted(handler)
    data = bytearray(8 * MiB)
    view = memoryview(data)
    async with AsyncioTransport() as transport:
        stream = await open_stream(transport, server.url)
        await stalled.wait()
        filled = 0
        while filled < 2 * MiB:
            filled += await stream.receive_into(view[filled:])
        reader = asyncio.ensure_future(stream.receive_into(view[filled:]))
        await asyncio.sleep(0.05)
        reader.cancel()
        await asyncio.wait([reader])
        assert reader.cancelled()
        assert stream._conn is None  # the half-read connection was closed, not pooled
        del reader
        gc.collect()
        view.release()
        data.append(0)  # a BufferError if the connection still held a view of the buffer
        await asyncio.wait_for(server.closed.wait(), 5)


async def test_a_chunked_body_is_copied_into_the_buffer(asgi_server: str) -> None:
    expected = b"".join(str(index).encode() * 1000 for index in range(300))
    data = bytearray(len(expected))
    async with AsyncioTransport() as transport:
        stream = await open_stream(transport, f"{asgi_server}/chunked?parts=300")
        sizes = await receive_all(stream, memoryview(data))
        assert await stream.receive_into(memoryview(bytearray(1))) == 0
    assert data == expected
    assert sum(sizes) == len(expected)


async def test_a_large_body_over_tls_lands_in_the_buffer(
    tls_server: str, client_ssl_context: ssl.SSLContext
) -> None:
    size = 5_000_000
    data = bytearray(size)
    async with AsyncioTransport(verify=client_ssl_context) as transport:
        stream = await open_stream(transport, f"{tls_server}/bytes?n={size}")
        await receive_all(stream, memoryview(data))
        assert await stream.receive_into(memoryview(bytearray(1))) == 0
        async with httpx.AsyncClient(transport=transport) as http:
            after = await http.get(f"{tls_server}/bytes?n=3")
    assert hashlib.sha256(data).digest() == hashlib.sha256(b"a" * size).digest()
    assert after.content == b"aaa"
