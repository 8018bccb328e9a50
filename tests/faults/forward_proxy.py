"""A minimal HTTP forward proxy on loopback: absolute-form requests in, origin-form out."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from ._loop_thread import Connections, LoopThread


class ForwardProxy:
    """Forwards each request to the origin its absolute URL names, one request per connection.

    ``targets`` records the absolute URLs asked for, so a test can see the proxy was used.
    """

    def __init__(self) -> None:
        self.targets: list[str] = []
        self._connections = Connections()
        self._thread = LoopThread("forward-proxy")
        self._server: asyncio.Server | None = None
        self.url = ""

    def start(self) -> ForwardProxy:
        self._thread.call(self._start())
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        self._thread.call(self._stop())
        self._thread.close()

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._connections.close_all()
        await self._server.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, fields = head.partition(b"\r\n")
            method, target, version = request_line.split(b" ")
            url = urlsplit(target.decode("ascii"))
            self.targets.append(url.geturl())
            kept = [
                line
                for line in fields.split(b"\r\n")
                if line and not line.lower().startswith((b"connection:", b"proxy-"))
            ]
            origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
            upstream_reader, upstream = await asyncio.open_connection(url.hostname, url.port)
            upstream.write(
                b"\r\n".join([b" ".join([method, origin.encode(), version]), *kept])
                + b"\r\nConnection: close\r\n\r\n"
            )
            await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._connections.discard(writer)
            for stream in (writer, upstream):
                if stream is not None:
                    stream.close()
                    with contextlib.suppress(OSError):
                        await stream.wait_closed()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()
    with contextlib.suppress(OSError):
        sink.write_eof()
