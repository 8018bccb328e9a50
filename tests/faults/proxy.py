"""A loopback TCP proxy that can lose a response (the server applied the request, the client
sees its connection reset) or hold one back (a loaded server answering late)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from ._loop_thread import LoopServer, abort_with_reset

__all__ = ["TcpProxy"]

_CHUNK = 64 * 1024


class TcpProxy(LoopServer):
    """Relays TCP connections from a free loopback port to ``upstream``, in its own thread.

    After :meth:`drop_next_response`, the next bytes the upstream sends are read to the end of
    that response (the server has applied the request and answered), then both connections are
    reset without relaying a byte of it. :meth:`drop_next_grpc_reply` does the same on an HTTP/2
    connection, when the upstream starts answering a call (its HEADERS frame). After
    :meth:`blackhole`, nothing is relayed any more in either direction, yet every connection
    stays open: a peer that vanished without a FIN.

    :meth:`drop_response_to` and :meth:`delay_responses_to` pick HTTP/1.1 responses by the path
    their request asked for: the proxy reads the request lines a client sends on a connection,
    and the next bytes the upstream sends on it are the answer (a client sends its next request
    on a connection only once it has read the answer to the last one).
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(f"tcp-proxy-{upstream_port}")
        self._upstream = (upstream_host, upstream_port)
        self._drop_armed = False
        self._grpc_drop_armed = False
        self._drops: list[str] = []  # paths whose next response is lost, one each
        self._delays: dict[str, float] = {}  # paths whose responses are held back, in seconds
        self.blackholed = False
        self._stopping = asyncio.Event()
        self.dropped = 0
        self.delayed = 0
        self.connections = 0

    def drop_next_response(self) -> None:
        """Lose the next response that comes back from the upstream."""
        self._drop_armed = True

    def drop_response_to(self, path: str) -> None:
        """Lose the response to the next HTTP/1.1 request for ``path`` (its query aside), on
        whichever connection it comes: read to its end (the server has applied the request and
        answered), then both connections are reset without relaying a byte of it."""
        self._drops.append(path)

    def delay_responses_to(self, path: str, seconds: float) -> None:
        """From now on, relay each response to an HTTP/1.1 request for ``path`` (its query
        aside) only ``seconds`` after its first bytes came back: the server has done its work
        by then, as on a loaded server. ``seconds=0`` relays them at once again."""
        self._delays[path] = seconds

    def drop_next_grpc_reply(self) -> None:
        """Lose the next gRPC reply: reset both connections at its HEADERS frame."""
        self._grpc_drop_armed = True

    def blackhole(self) -> None:
        """From now on, silently drop every byte both ways (connections stay open)."""
        self.blackholed = True

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            abort_with_reset(client_w)
            return
        self._connections.add(client_w)
        self._connections.add(upstream_w)
        try:
            exchange = _Exchange()
            upload = asyncio.ensure_future(self._pump(client_r, upstream_w, exchange))
            try:
                await self._download(upstream_r, client_w, upstream_w, exchange)
            finally:
                upload.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await upload
        finally:
            self._connections.discard(client_w)
            self._connections.discard(upstream_w)
            upstream_w.close()
            client_w.close()

    async def _download(
        self,
        upstream_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream_w: asyncio.StreamWriter,
        exchange: _Exchange,
    ) -> None:
        frames = _Http2Frames()
        while data := await _read(upstream_r):
            if self.blackholed:
                continue
            if frames.feed(data) and self._grpc_drop_armed:
                self._grpc_drop_armed = False
                self.dropped += 1
                abort_with_reset(client_w)
                abort_with_reset(upstream_w)
                return
            if self._drop_armed or exchange.drop:
                self._drop_armed = exchange.drop = False
                await _read_rest_of_response(upstream_r, data)
                self.dropped += 1
                abort_with_reset(client_w)
                abort_with_reset(upstream_w)
                return
            if exchange.delay:
                delay, exchange.delay = exchange.delay, 0.0
                self.delayed += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
            client_w.write(data)
            with contextlib.suppress(OSError):
                await client_w.drain()
        if self.blackholed:  # a vanished peer sends no FIN either
            await self._stopping.wait()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: _Exchange
    ) -> None:
        requests = _Http11Requests()
        while data := await _read(reader):
            if self.blackholed:
                continue
            for path in requests.feed(data):  # armed before the request reaches the upstream
                if path in self._drops:
                    self._drops.remove(path)
                    exchange.drop = True
                exchange.delay = self._delays.get(path, 0.0)
            writer.write(data)
            await writer.drain()
        if self.blackholed:
            await self._stopping.wait()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _stop(self) -> None:
        self._stopping.set()
        await super()._stop()


class _Exchange:
    """What to do with the next response on one proxied connection."""

    __slots__ = ("delay", "drop")

    def __init__(self) -> None:
        self.drop = False  # lose it
        self.delay = 0.0  # relay it this many seconds late


class _Http11Requests:
    """Follows the requests of an HTTP/1.1 byte stream from a client: the paths they ask for.

    Stops following (finds no more requests) at anything else: an HTTP/2 preface, a head it
    cannot read, or a body without a ``Content-Length`` (chunked).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._body_left = 0  # bytes of the current request's body still to come
        self._lost = False

    def feed(self, data: bytes) -> list[str]:
        """Take the next bytes; the paths of the requests whose heads they complete."""
        if self._lost:
            return []
        self._buffer += data
        paths: list[str] = []
        while True:
            if self._body_left:
                skipped = min(self._body_left, len(self._buffer))
                self._body_left -= skipped
                self._buffer = self._buffer[skipped:]
                if self._body_left:
                    return paths
            self._buffer = self._buffer.lstrip(b"\r\n")  # (empty lines may come between)
            head, found, rest = self._buffer.partition(b"\r\n\r\n")
            if not found:
                return paths
            self._buffer = rest
            request_line, *fields = head.split(b"\r\n")
            parts = request_line.split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                self._lost = True
                return paths
            target = parts[1].decode("latin-1")
            paths.append(urlsplit(target).path if "://" in target else target.partition("?")[0])
            for field in fields:
                name, _, value = field.partition(b":")
                name = name.strip().lower()
                if name == b"content-length" and value.strip().isdigit():
                    self._body_left = int(value)
                elif name in (b"content-length", b"transfer-encoding"):
                    self._lost = True  # (a length it cannot read, or chunks)
            if self._lost:
                return paths


class _Http2Frames:
    """Follows the frames of an HTTP/2 byte stream from a server (no preface on that side)."""

    _HEADERS = 0x1
    _SETTINGS = 0x4

    def __init__(self) -> None:
        self._buffer = b""
        self._http2: bool | None = None  # known from the first frame, a SETTINGS frame

    def feed(self, data: bytes) -> bool:
        """Take the next bytes; True if they complete a HEADERS frame on a stream."""
        if self._http2 is None:
            self._http2 = len(data) >= 9 and data[3] == self._SETTINGS
        if not self._http2:
            return False
        self._buffer += data
        headers = False
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            frame_type, stream = self._buffer[3], int.from_bytes(self._buffer[5:9], "big")
            headers = headers or (frame_type == self._HEADERS and stream & 0x7FFFFFFF != 0)
            self._buffer = self._buffer[9 + length :]
        return headers


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(_CHUNK)
    except OSError:
        return b""


async def _read_rest_of_response(reader: asyncio.StreamReader, first: bytes) -> None:
    """Read an HTTP/1.1 response with a ``Content-Length`` (or none) to its end."""
    data = first
    while b"\r\n\r\n" not in data:
        more = await _read(reader)
        if not more:
            return
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        more = await _read(reader)
        if not more:
            return
        body += more
