"""A minimal HTTP forward proxy on loopback: absolute-form requests in, origin-form out."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from ._loop_thread import LoopServer


class ForwardProxy(LoopServer):
    """Forwards each request to the origin its absolute URL names, one request per connection.

    ``targets`` records the absolute URLs asked for, so a test can see the proxy was used.
    """

    def __init__(self) -> None:
        super().__init__("forward-proxy")
        self.targets: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
