"""A loopback TCP proxy that can lose a response: the server applied the request, the client
sees its connection reset."""

from __future__ import annotations

import asyncio
import contextlib

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
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(f"tcp-proxy-{upstream_port}")
        self._upstream = (upstream_host, upstream_port)
        self._drop_armed = False
        self._grpc_drop_armed = False
        self.blackholed = False
        self._stopping = asyncio.Event()
        self.dropped = 0
        self.connections = 0

    def drop_next_response(self) -> None:
        """Lose the next response that comes back from the upstream."""
        self._drop_armed = True

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
            upload = asyncio.ensure_future(self._pump(client_r, upstream_w))
            try:
                await self._download(upstream_r, client_w, upstream_w)
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
            if self._drop_armed:
                self._drop_armed = False
                await _read_rest_of_response(upstream_r, data)
                self.dropped += 1
                abort_with_reset(client_w)
                abort_with_reset(upstream_w)
                return
            client_w.write(data)
            with contextlib.suppress(OSError):
                await client_w.drain()
        if self.blackholed:  # a vanished peer sends no FIN either
            await self._stopping.wait()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await _read(reader):
            if self.blackholed:
                continue
            writer.write(data)
            await writer.drain()
        if self.blackholed:
            await self._stopping.wait()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _stop(self) -> None:
        self._stopping.set()
        await super()._stop()


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
