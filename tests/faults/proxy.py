"""A loopback TCP proxy that can lose a response (the server applied the request, the client
sees its connection reset), hold one back (a loaded server answering late) or cut one in the
middle of its body (a connection broken mid-download)."""

from __future__ import annotations

import asyncio
import contextlib
import re
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

    :meth:`cut_after` and :meth:`cut_response_to` cut a response short: the bytes before the
    cut are relayed, then both connections are reset (``cuts`` counts them). ``sent`` keeps
    every byte the clients sent (since the last :meth:`cut_after`), to see what a retry asked.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(f"tcp-proxy-{upstream_port}")
        self._upstream = (upstream_host, upstream_port)
        self._drop_armed = False
        self._grpc_drop_armed = False
        self._drops: list[str] = []  # paths whose next response is lost, one each
        self._delays: dict[str, float] = {}  # paths whose responses are held back, in seconds
        self._cut_at: int | None = None  # the byte of all relayed to clients to cut at
        self._relayed = 0  # bytes relayed to clients since cut_after
        self._body_cuts: dict[str, int] = {}  # path prefixes: cut after this many body bytes
        self.blackholed = False
        self._stopping = asyncio.Event()
        self.dropped = 0
        self.delayed = 0
        self.connections = 0
        self.cuts = 0
        self.sent = bytearray()

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

    def cut_after(self, nbytes: int) -> None:
        """Cut the connection that carries byte ``nbytes`` of all the proxy relays to its
        clients from now on (once), after relaying the bytes before it; ``sent`` starts over."""
        self._relayed = 0
        self._cut_at = nbytes
        self.sent = bytearray()

    def cut_response_to(self, prefix: str, nbytes: int) -> None:
        """Cut the first response to an HTTP/1.1 request for a path under ``prefix`` (its
        query aside) whose body (of a ``Content-Length``) is longer than ``nbytes``, after
        relaying its head and ``nbytes`` of its body."""
        self._body_cuts[prefix] = nbytes

    def range_starts(self) -> list[int]:
        """The first byte of every ``Range`` in ``sent`` (what the clients asked for)."""
        found = re.findall(rb"(?i)\r\nrange: *bytes=(\d+)-", bytes(self.sent))
        return [int(start) for start in found]

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
            cut = self._cut_in(data, exchange)
            if cut is not None:
                data = data[:cut]
            self._relayed += len(data)
            client_w.write(data)
            with contextlib.suppress(OSError):
                await client_w.drain()
            if cut is not None:
                self.cuts += 1
                abort_with_reset(client_w)
                abort_with_reset(upstream_w)
                return
        if self.blackholed:  # a vanished peer sends no FIN either
            await self._stopping.wait()

    def _cut_in(self, data: bytes, exchange: _Exchange) -> int | None:
        """Where in ``data`` (the next bytes for a client) to cut, or None."""
        if self._cut_at is not None and self._relayed + len(data) >= self._cut_at:
            cut, self._cut_at = self._cut_at - self._relayed, None
            return cut
        if exchange.cut_prefix is None:
            return None
        body = 0  # where the body begins in data
        if exchange.cut_after is None:  # its head is not complete yet
            found = exchange.body_in(data)
            if found is None:
                return None
            body = found
            armed = self._body_cuts.get(exchange.cut_prefix)
            if armed is None or exchange.length <= armed:
                exchange.cut_prefix = None  # not the one to cut
                return None
            del self._body_cuts[exchange.cut_prefix]  # (the first such response only)
            exchange.cut_after = armed
        if exchange.body + len(data) - body >= exchange.cut_after:
            return body + exchange.cut_after - exchange.body
        exchange.body += len(data) - body
        return None

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: _Exchange
    ) -> None:
        requests = _Http11Requests()
        while data := await _read(reader):
            self.sent += data
            if self.blackholed:
                continue
            for path in requests.feed(data):  # armed before the request reaches the upstream
                if path in self._drops:
                    self._drops.remove(path)
                    exchange.drop = True
                exchange.delay = self._delays.get(path, 0.0)
                exchange.watch(next((p for p in self._body_cuts if path.startswith(p)), None))
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

    __slots__ = ("_head", "body", "cut_after", "cut_prefix", "delay", "drop", "length")

    def __init__(self) -> None:
        self.drop = False  # lose it
        self.delay = 0.0  # relay it this many seconds late
        self.watch(None)

    def watch(self, prefix: str | None) -> None:
        """Follow the next response, to cut it if it answers a request for a path under
        ``prefix`` (None: not to)."""
        self.cut_prefix = prefix
        self.cut_after: int | None = None  # the body bytes to relay, once decided
        self._head = b""
        self.length = 0  # of its body, once its head is complete
        self.body = 0  # body bytes relayed so far

    def body_in(self, data: bytes) -> int | None:
        """Take the next bytes of the response's head: where its body begins in ``data``, if
        they complete the head (then ``length`` is known), or None."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return None
        for line in self._head[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                self.length = int(value)
        return len(data) - (len(self._head) - end - 4)


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
