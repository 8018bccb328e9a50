"""Bulk bytes through the one request path: raw request bodies, and downloads into a sink that
resume with ``Range`` after a broken connection, against real servers on loopback.

A range server (below, on the fault peers' loop-thread plumbing of tests/faults) serves one
multi-MiB body with an ``ETag`` and ``Accept-Ranges: bytes``, answers ``Range``/``If-Range`` with
``206``, and can cut a response mid-body (a reset or a hang-up), answer a ``Range`` with a full
``200``, misplace a ``206``, or stall. The scripted server (tests/faults/scripted.py) answers the
error statuses and records the raw uploads. Each test runs on aiosdk's fast transport (asyncio)
and on httpx's own (HTTP/2 setting on asyncio, and trio). The resuming tests run with a sink of
spans and with one that offers its buffer (a ``BufferSink``), which the fast transport receives
the body into.
"""

from __future__ import annotations

import array
import asyncio
import gc
import gzip
import random
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest
from faults._loop_thread import LoopServer, abort_with_reset
from faults.scripted import HANGUP, Respond, ScriptedServer, Seen, _read_request, fail

import aiosdk
from aiosdk._core.bulk import BufferSink

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
SIZE = 8 * MiB + 3  # not a multiple of any read size
ETAG = '"body-v1"'
FLAVOURS = ["fast", "httpx-asyncio", "httpx-trio"]


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """Which HTTP transport carries the calls (see tests/faults/test_transport_choice.py)."""
    return str(request.param)


@pytest.fixture
def anyio_backend(flavour: str) -> str:
    return "trio" if flavour == "httpx-trio" else "asyncio"


def client_of(url: str, flavour: str, mode: str = "default") -> aiosdk.AsyncClient:
    # http2=True makes the client use httpx's own transport (the server answers HTTP/1.1).
    return aiosdk.AsyncClient(url, token="t", retry_mode=mode, http2=flavour == "httpx-asyncio")


class RangeServer(LoopServer):
    """Serves ``body`` on every path, with its ETag, ranges and the faults it is told to play."""

    def __init__(self, body: bytes) -> None:
        super().__init__("range-http")
        self.body = body
        self.etag: str | None = ETAG
        self.accept_ranges = True
        self.cuts: list[tuple[int, str]] = []
        """For each next response: send this many body bytes, then "reset" or "hangup"."""
        self.full_answer_to_range = False
        self.misplace_next_range = False
        self.stall_after: int | None = None
        self.seen: list[Seen] = []
        self.open_connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self._connections.add(writer)
        try:
            while (request := await _read_request(reader)) is not None:
                self.seen.append(request)
                if not await self._answer(request, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_connections -= 1
            self._connections.discard(writer)
            writer.close()

    async def _answer(
        self, request: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        total = len(self.body)
        headers = {"Content-Type": "application/octet-stream"}
        if self.etag is not None:
            headers["ETag"] = self.etag
        if self.accept_ranges:
            headers["Accept-Ranges"] = "bytes"
        start, status = 0, "200 OK"
        asked = request.headers.get("range")
        if (
            asked is not None
            and not self.full_answer_to_range
            and request.headers.get("if-range") == self.etag
        ):
            start = int(asked.removeprefix("bytes=").removesuffix("-"))
            if self.misplace_next_range:
                self.misplace_next_range = False
                start -= 1
            status = "206 Partial Content"
            headers["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
        part = memoryview(self.body)[start:]
        headers["Content-Length"] = str(len(part))
        head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode("latin-1") + b"\r\n")
        cut, how = self.cuts.pop(0) if self.cuts else (None, "")
        stall = self.stall_after
        limit = min([len(part), *(n for n in (cut, stall) if n is not None)])
        for offset in range(0, limit, MiB):
            writer.write(part[offset : min(offset + MiB, limit)])
            await writer.drain()
        if cut is not None:
            if how == "reset":
                abort_with_reset(writer)
            return False  # (a hang-up: the handler closes the connection)
        if stall is not None:
            await reader.read()  # until the client closes the connection
            return False
        return True


@pytest.fixture
def body() -> bytes:
    return random.Random(10).randbytes(SIZE)


@pytest.fixture
def ranges(body: bytes) -> Iterator[RangeServer]:
    server = RangeServer(body).start()
    yield server
    server.stop()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    yield server
    server.stop()


class Collector:
    """A sink writing into one preallocated buffer, and the offsets at which each body began."""

    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)
        self.starts: list[int] = []  # the offset of each span that did not follow the last one
        self._next = -1
        self.received = 0

    def __call__(self, offset: int, span: bytes) -> None:
        if offset != self._next:
            self.starts.append(offset)
        self.buffer[offset : offset + len(span)] = span
        self._next = offset + len(span)
        self.received += len(span)


class Destination(BufferSink):
    """A sink that offers its buffer; counts what was received into it directly (``into``)."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.buffer: memoryview = memoryview(self.data)
        self.starts: list[int] = []
        self._next = -1
        self.received = 0
        self.into = 0

    def __call__(self, offset: int, span: bytes) -> None:
        self.data[offset : offset + len(span)] = span
        self._arrived(offset, len(span))

    def filled(self, offset: int, size: int) -> None:
        self.into += size
        self._arrived(offset, size)

    def _arrived(self, offset: int, size: int) -> None:
        if offset != self._next:
            self.starts.append(offset)
        self._next = offset + size
        self.received += size


class SizedOnBegin(Destination):
    """A destination made when a body begins, of the size the answer gives."""

    def __init__(self) -> None:
        super().__init__(0)
        self.begins: list[int | None] = []

    def begin(self, size: int | None) -> None:
        self.begins.append(size)
        if size is not None and size != len(self.data):
            self.data = bytearray(size)
            self.buffer = memoryview(self.data)


NewSink = Callable[[int], Collector | Destination]


@pytest.fixture(params=["spans", "buffer"])
def new_sink(request: pytest.FixtureRequest) -> NewSink:
    """Makes the sinks of a test: all of spans, or all offering their buffer."""
    return Collector if request.param == "spans" else Destination


def check_route(sink: Collector | Destination, flavour: str) -> None:
    """Only the fast transport receives into a buffer, and then the most of each body (what
    the parser read with a response's head comes as a span)."""
    if isinstance(sink, Destination) and flavour == "fast":
        assert sink.into >= sink.received // 2
    elif isinstance(sink, Destination):
        assert sink.into == 0


def ranges_asked(server: RangeServer) -> list[tuple[str | None, str | None]]:
    return [(seen.headers.get("range"), seen.headers.get("if-range")) for seen in server.seen]


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition``, which a server thread changes, until it holds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


def pool_connections(client: aiosdk.AsyncClient) -> int:
    """How many connections the client's pool holds open (idle ones included)."""
    pool = client._ctx.transport._pool
    assert pool is not None
    inner = pool.transport._pool  # type: ignore[attr-defined]
    if hasattr(inner, "_active"):  # aiosdk's fast transport: in use, and idle by origin
        idle = sum(len(conns) for conns in inner._idle.values())
        return len(inner._active) + idle
    return sum(not conn.is_closed() for conn in inner.connections)  # httpcore's pool


# -- resuming a download ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["reset", "hangup"])
async def test_forceful_resumes_with_range_where_the_body_stopped(
    ranges: RangeServer, body: bytes, flavour: str, new_sink: NewSink, how: str
) -> None:
    ranges.cuts = [(3 * MiB + 17, how)]
    sink = new_sink(SIZE)
    async with client_of(ranges.url, flavour, "forceful") as client:
        response = await client._ctx.download("GET", "/array/block/a", sink=sink)
        assert client._ctx.transport.http_transport_name == (
            "AsyncioTransport" if flavour == "fast" else "AsyncHTTPTransport"
        )
    assert sink.buffer == body
    assert response.status_code == 200
    assert response.headers["etag"] == ETAG
    assert response.content == b""
    (first, _), (resumed, if_range) = ranges_asked(ranges)
    assert first is None
    assert resumed is not None
    at = int(resumed.removeprefix("bytes=").removesuffix("-"))
    assert 0 < at <= 3 * MiB + 17  # what the client had received when the connection broke
    assert if_range == ETAG
    assert sink.starts == [0]  # the second body went on exactly where the first stopped
    assert sink.received == SIZE
    check_route(sink, flavour)


async def test_a_full_answer_to_the_range_request_starts_over_from_0(
    ranges: RangeServer, body: bytes, flavour: str, new_sink: NewSink
) -> None:
    ranges.cuts = [(2 * MiB, "reset")]
    ranges.full_answer_to_range = True
    sink = new_sink(SIZE)
    async with client_of(ranges.url, flavour, "forceful") as client:
        response = await client._ctx.download("GET", "/array/block/a", sink=sink)
    assert sink.buffer == body
    assert response.status_code == 200
    assert [asked is not None for asked, _ in ranges_asked(ranges)] == [False, True]
    assert sink.starts == [0, 0]
    assert sink.received > SIZE
    check_route(sink, flavour)


async def test_a_206_at_the_wrong_offset_is_refused_and_the_retry_starts_over(
    ranges: RangeServer, body: bytes, flavour: str, new_sink: NewSink
) -> None:
    ranges.cuts = [(2 * MiB, "reset")]
    ranges.misplace_next_range = True
    sink = new_sink(SIZE)
    async with client_of(ranges.url, flavour, "forceful") as client:
        await client._ctx.download("GET", "/array/block/a", sink=sink)
    assert sink.buffer == body
    assert [asked is not None for asked, _ in ranges_asked(ranges)] == [False, True, False]
    assert sink.starts == [0, 0]  # the misplaced 206 never reached the sink
    check_route(sink, flavour)


@pytest.mark.parametrize(
    ("etag", "accept_ranges"), [(None, True), ('W/"weak"', True), (ETAG, False)]
)
async def test_forceful_restarts_from_0_what_cannot_be_resumed(
    ranges: RangeServer,
    body: bytes,
    flavour: str,
    etag: str | None,
    accept_ranges: bool,
    new_sink: NewSink,
) -> None:
    ranges.etag, ranges.accept_ranges = etag, accept_ranges
    ranges.cuts = [(2 * MiB, "reset")]
    sink = new_sink(SIZE)
    async with client_of(ranges.url, flavour, "forceful") as client:
        await client._ctx.download("GET", "/array/block/a", sink=sink)
    assert sink.buffer == body
    assert ranges_asked(ranges) == [(None, None), (None, None)]
    assert sink.starts == [0, 0]
    check_route(sink, flavour)


async def test_default_mode_sends_the_get_again_from_0(
    ranges: RangeServer, body: bytes, flavour: str, new_sink: NewSink
) -> None:
    ranges.cuts = [(2 * MiB, "reset")]
    sink = new_sink(SIZE)
    async with client_of(ranges.url, flavour, "default") as client:
        await client._ctx.download("GET", "/array/block/a", sink=sink)
    assert sink.buffer == body
    assert ranges_asked(ranges) == [(None, None), (None, None)]
    assert sink.starts == [0, 0]
    check_route(sink, flavour)


async def test_disabled_mode_raises_the_transport_error(
    ranges: RangeServer, flavour: str, new_sink: NewSink
) -> None:
    ranges.cuts = [(2 * MiB, "reset")]
    sink = new_sink(SIZE)
    async with client_of(ranges.url, flavour, "disabled") as client:
        with pytest.raises(aiosdk.TransportError):
            await client._ctx.download("GET", "/array/block/a", sink=sink)
    assert len(ranges.seen) == 1
    assert 0 < sink.received <= 2 * MiB
    check_route(sink, flavour)


async def test_a_request_with_its_own_range_is_never_resumed(
    ranges: RangeServer, body: bytes, flavour: str
) -> None:
    ranges.cuts = [(MiB, "reset")]
    sink = Collector(SIZE - 100)
    headers = {"Range": "bytes=100-", "If-Range": ETAG}
    async with client_of(ranges.url, flavour, "forceful") as client:
        response = await client._ctx.download("GET", "/a", sink=sink, headers=headers)
    assert response.status_code == 206
    assert sink.buffer == body[100:]
    assert ranges_asked(ranges) == [("bytes=100-", ETAG)] * 2
    assert sink.starts == [0, 0]


@pytest.mark.parametrize(("full_answer", "begins"), [(False, [SIZE]), (True, [SIZE, SIZE])])
async def test_a_sink_learns_the_size_of_each_body_that_begins_at_0(
    ranges: RangeServer, body: bytes, flavour: str, full_answer: bool, begins: list[int]
) -> None:
    ranges.cuts = [(2 * MiB, "reset")]
    ranges.full_answer_to_range = full_answer
    sink = SizedOnBegin()
    async with client_of(ranges.url, flavour, "forceful") as client:
        await client._ctx.download("GET", "/array/block/a", sink=sink)
    assert sink.begins == begins  # a resumed body (206) goes on: it does not begin again
    assert sink.data == body
    check_route(sink, flavour)


# -- what a download answers besides a body --------------------------------------------------


async def test_error_statuses_raise_as_request_does(scripted: ScriptedServer, flavour: str) -> None:
    scripted.script(fail(404), fail(503, retry_after="0"), Respond(200, body=b"data"))
    sink = Collector(4)
    async with client_of(scripted.url, flavour) as client:
        with pytest.raises(aiosdk.NotFoundError, match="scripted 404") as caught:
            await client._ctx.download("GET", "/array/block/a", sink=sink)
        assert caught.value.request_id == "req-1"
        # A 503 is retried; its body never reaches the sink.
        response = await client._ctx.download("GET", "/array/block/a", sink=sink)
    assert response.status_code == 200
    assert sink.buffer == b"data"
    assert sink.starts == [0]
    assert len(scripted.requests) == 3


async def test_an_encoded_body_reaches_the_sink_decoded(
    scripted: ScriptedServer, flavour: str
) -> None:
    data = random.Random(3).randbytes(MiB) * 2
    encoded = Respond(200, {"Content-Encoding": "gzip"}, body=gzip.compress(data))
    scripted.script(encoded)
    sink = Collector(len(data))
    async with client_of(scripted.url, flavour) as client:
        await client._ctx.download("GET", "/a", sink=sink, expected_size=len(data))
        scripted.script(encoded)
        sized = SizedOnBegin()
        sized.data = bytearray(len(data))
        sized.buffer = memoryview(sized.data)
        await client._ctx.download("GET", "/a", sink=sized)
    assert sink.buffer == data
    assert sink.starts == [0]
    assert sized.begins == [None]  # the answer's Content-Length is the encoded body's
    assert sized.data == data
    assert sized.into == 0  # decoded spans, never into the buffer


async def test_a_body_of_another_size_than_expected_is_a_protocol_error(
    ranges: RangeServer, flavour: str
) -> None:
    sink = Collector(SIZE)
    async with client_of(ranges.url, flavour, "forceful") as client:
        with pytest.raises(aiosdk.ProtocolError, match=f"{SIZE} bytes, not 1000"):
            await client._ctx.download("GET", "/a", sink=sink, expected_size=1000)
        await client._ctx.download("GET", "/a", sink=sink, expected_size=SIZE)
    assert len(ranges.seen) == 2  # never retried
    assert sink.starts == [0]  # the first body never reached the sink


async def test_cancelling_a_download_closes_its_connection_at_once(
    ranges: RangeServer, body: bytes, flavour: str, new_sink: NewSink
) -> None:
    ranges.stall_after = 3 * MiB
    sink = new_sink(SIZE)
    async with client_of(ranges.url, flavour, "forceful") as client:
        with anyio.move_on_after(10) as scope:
            async with anyio.create_task_group() as tg:

                async def download() -> None:
                    await client._ctx.download("GET", "/a", sink=sink)

                tg.start_soon(download)
                await wait_until(lambda: sink.received >= MiB)
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught
        if isinstance(sink, Destination):
            check_route(sink, flavour)
            gc.collect()
            sink.buffer.release()
            sink.data.append(0)  # a BufferError if anything still held a view of the buffer
        assert pool_connections(client) == 0  # the half-read connection is gone, not pooled
        assert client._ctx.transport._pool is not None
        assert client._ctx.transport._pool.active == 0
        await wait_until(lambda: ranges.open_connections == 0)
        ranges.stall_after = None
        sink = new_sink(SIZE)
        await client._ctx.download("GET", "/a", sink=sink)  # the client works on
        assert sink.buffer == body
        check_route(sink, flavour)
    assert len(ranges.seen) == 2
    gc.collect()  # an unclosed socket or transport would warn now, and warnings are errors


@pytest.mark.parametrize("flavour", ["fast"])
@pytest.mark.parametrize("cancels", ["once", "again-and-again"])
async def test_closing_closes_every_pool_through_asyncio_cancellations(
    ranges: RangeServer, cancels: str
) -> None:
    # Task.cancel() goes through anyio's shields; a client closed under it (asyncio's timeout,
    # the blocking facade's Ctrl-C) still closes every pool: the retired one, still busy with
    # a stalled download, and the current one.
    loop = asyncio.get_running_loop()
    ranges.stall_after = MiB
    client = client_of(ranges.url, "fast")
    sink = Collector(SIZE)
    stalled = asyncio.ensure_future(client._ctx.download("GET", "/a", sink=sink))
    await wait_until(lambda: sink.received > 0)
    ranges.stall_after = None
    transport = client._ctx.transport
    transport.set_limits(httpx.Limits(max_connections=4))
    await client._ctx.download("GET", "/b", sink=Collector(SIZE))  # on a new pool
    (retired,), current = transport._retired, transport._pool
    assert current is not None
    closing = asyncio.ensure_future(client.aclose())

    def cancel() -> None:
        if not closing.done():
            closing.cancel()
            if cancels == "again-and-again":
                loop.call_soon(cancel)

    loop.call_soon(cancel)
    await asyncio.wait([closing, stalled])
    assert closing.cancelled()  # delivered once the closing was done
    assert retired.transport._pool.closed  # type: ignore[attr-defined]
    assert current.transport._pool.closed  # type: ignore[attr-defined]
    assert isinstance(stalled.exception(), aiosdk.ClientClosedError)
    await wait_until(lambda: ranges.open_connections == 0)


@pytest.mark.parametrize(
    ("flavour", "cancels"),
    [("fast", "once"), ("fast", "again-and-again"), ("httpx-asyncio", "once")],
)
async def test_a_download_cancelled_by_asyncio_itself_closes_its_connection(
    ranges: RangeServer, body: bytes, flavour: str, new_sink: NewSink, cancels: str
) -> None:
    # Task.cancel() goes through anyio's shields, the one around closing a half-read answer
    # too; "again-and-again" cancels on every turn of the loop until the download is done:
    # the fast transport closes its connections without waiting, so nothing can cut that
    # short (httpcore's own shielded cleanup can be: httpx's transport is left out of it).
    loop = asyncio.get_running_loop()
    ranges.stall_after = 3 * MiB
    sink = new_sink(SIZE)
    async with client_of(ranges.url, flavour, "forceful") as client:
        download = asyncio.ensure_future(client._ctx.download("GET", "/a", sink=sink))

        def cancel() -> None:
            if not download.done():
                download.cancel()
                if cancels == "again-and-again":
                    loop.call_soon(cancel)

        await wait_until(lambda: sink.received >= MiB)
        loop.call_soon(cancel)
        await asyncio.wait([download])
        assert download.cancelled()
        assert pool_connections(client) == 0  # the half-read connection is gone, not pooled
        assert client._ctx.transport._pool is not None
        assert client._ctx.transport._pool.active == 0
        await wait_until(lambda: ranges.open_connections == 0)
        ranges.stall_after = None
        again = new_sink(SIZE)
        await client._ctx.download("GET", "/a", sink=again)  # the client works on
        assert again.buffer == body


# -- raw request bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1000, 5 * MiB + 1])
async def test_raw_content_arrives_byte_exact_with_one_idempotency_key(
    scripted: ScriptedServer, flavour: str, size: int
) -> None:
    data = bytearray(random.Random(size).randbytes(size))
    scripted.script(fail(503, retry_after="0"))
    headers = {"Content-Type": "application/octet-stream"}
    async with client_of(scripted.url, flavour, "forceful") as client:
        response = await client._ctx.request(
            "POST", "/table/partition/t", content=memoryview(data), headers=headers
        )
    assert response.status_code == 200
    first, second = scripted.seen("POST")
    for seen in (first, second):
        assert seen.body == data
        assert seen.headers["content-type"] == "application/octet-stream"
        assert seen.headers["content-length"] == str(size)
        assert seen.headers.get("transfer-encoding") is None
    assert first.idempotency_key is not None
    assert first.idempotency_key == second.idempotency_key


async def test_content_may_be_any_contiguous_buffer(scripted: ScriptedServer, flavour: str) -> None:
    doubles = array.array("d", range(100_000))  # 800 kB of 8-byte items
    async with client_of(scripted.url, flavour) as client:
        await client._ctx.request("PUT", "/array/block/a", content=memoryview(doubles))
        await client._ctx.request("PUT", "/array/block/a", content=b"small bytes")
        with pytest.raises(aiosdk.ConfigurationError, match="C-contiguous"):
            await client._ctx.request("PUT", "/a", content=memoryview(doubles)[::2])
        with pytest.raises(aiosdk.ConfigurationError, match="not both"):
            await client._ctx.request("PUT", "/a", content=b"x", json={})
    large, small = scripted.seen("PUT")
    assert large.body == doubles.tobytes()
    assert small.body == b"small bytes"
    assert large.idempotency_key is not None


async def test_an_idempotent_put_may_go_without_an_idempotency_key(
    scripted: ScriptedServer, flavour: str
) -> None:
    data = random.Random(4).randbytes(MiB)
    scripted.script(fail(503, retry_after="0"))
    async with client_of(scripted.url, flavour, "forceful") as client:
        await client._ctx.transport.request(
            "PUT",
            "/array/block/a",
            content=data,
            options=client._ctx.options,
            idempotency_key=False,
        )
        await client._ctx.request("PUT", "/array/block/a", content=data)
        with pytest.raises(aiosdk.ConfigurationError, match="only an idempotent method"):
            await client._ctx.transport.request(
                "POST", "/a", json={}, options=client._ctx.options, idempotency_key=False
            )
    refused, retried, keyed = scripted.seen("PUT")
    assert refused.body == retried.body == keyed.body == data  # the 503 was retried
    assert refused.idempotency_key is None
    assert retried.idempotency_key is None
    assert keyed.idempotency_key is not None  # the default for every mutating call
    assert scripted.seen("POST") == []


@pytest.mark.parametrize("flavour", ["fast"])
async def test_a_large_body_is_sent_again_when_a_kept_alive_connection_was_closed(
    scripted: ScriptedServer,
) -> None:
    data = random.Random(2).randbytes(3 * MiB)
    scripted.script(Respond(), HANGUP)  # the second request finds its connection closed
    async with client_of(scripted.url, "fast", "disabled") as client:
        await client._ctx.request("PUT", "/array/block/a", content=b"first")
        await client._ctx.request("PUT", "/array/block/a", content=memoryview(data))
    first, lost, resent = scripted.seen("PUT")
    assert first.body == b"first"
    assert lost.body == resent.body == data  # resent by the transport: retries are disabled
