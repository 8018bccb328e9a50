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
    reset without relaying a byte of it.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(f"tcp-proxy-{upstream_port}")
        self._upstream = (upstream_host, upstream_port)
        self._drop_armed = False
        self.dropped = 0
        self.connections = 0

    def drop_next_response(self) -> None:
        """Lose the next response that comes back from the upstream."""
        self._drop_armed = True

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
            upload = asyncio.ensure_future(_pump(client_r, upstream_w))
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
        while data := await _read(upstream_r):
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


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(_CHUNK)
    except OSError:
        return b""


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await _read(reader):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


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
