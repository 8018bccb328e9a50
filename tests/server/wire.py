"""Raw-socket helpers for the tests of the server's limits: what a hostile client would send."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from aiosdk.server import Limits, Server, ServerConfig

GUARD_SECONDS = 20  # a hang guard, not a timing assertion


@contextlib.asynccontextmanager
async def serving(data_dir: Path, **limits: float | int) -> AsyncIterator[Server]:
    """A server on free loopback ports with ``limits`` (fields of :class:`Limits`)."""
    config = ServerConfig(data_dir=data_dir, limits=Limits(**limits))
    async with Server(config) as server:
        yield server


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, str]:
        """The ``error`` member of a body in the API's error shape, checked."""
        assert self.headers["content-type"] == "application/json"
        error: dict[str, str] = json.loads(self.body)["error"]
        assert set(error) == {"type", "message", "request_id"}
        assert error["request_id"] == self.headers["x-request-id"]
        return error


class RawHttp:
    """An HTTP/1.1 connection driven byte by byte."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, server: Server) -> AsyncIterator[RawHttp]:
        async with await anyio.connect_tcp("127.0.0.1", server.http_port) as stream:
            yield cls(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def response(self, *, head: bool = False) -> RawResponse:
        """The next response (without a body if it answers a HEAD request)."""
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += await self.stream.receive()
        head_bytes, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            self._buffer += await self.stream.receive()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return RawResponse(int(status_line.split(" ")[1]), headers, body)

    async def closed_by_server(self) -> bytes:
        """Wait until the server closes the connection; what it sent meanwhile."""
        received = self._buffer
        with anyio.fail_after(GUARD_SECONDS):
            while True:
                try:
                    received += await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return received


def request(
    method: str = "GET",
    target: str = "/api/v1/",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request in canonical form, ``Host`` first."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
