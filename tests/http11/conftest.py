"""Fixtures for the AsyncioTransport tests: real servers on loopback."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LARGE_HEADER = "x" * (60 * 1024)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The conformance server's ASGI app; each path exercises one feature."""
    assert scope["type"] == "http"
    path: str = scope["path"]
    query = dict(
        part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part
    )
    if path == "/peer":
        await _respond(send, 200, str(scope["client"][1]).encode(), [])
    elif path == "/bytes":
        await _respond(send, 200, b"a" * int(query["n"]), [])
    elif path == "/chunked":
        # No content-length: uvicorn sends chunked transfer encoding.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(int(query["parts"])):
            part = str(index).encode() * 1000
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/status":
        status = int(query["code"])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/upload":
        size = 0
        digest = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            digest = (digest + sum(chunk[::997])) % 1_000_003
            if not message.get("more_body"):
                break
        encoding = dict(scope["headers"]).get(b"transfer-encoding", b"-").decode()
        await _respond(send, 200, f"{size} {digest} {encoding}".encode(), [])
    elif path == "/slow":
        await asyncio.sleep(float(query["delay"]))
        await _respond(send, 200, b"slow", [])
    elif path == "/large-header":
        received = dict(scope["headers"]).get(b"x-large", b"")
        await _respond(send, 200, str(len(received)).encode(), [(b"x-large", LARGE_HEADER.encode())])
    elif path == "/stream":
        # A long body sent slowly enough that the client is still reading.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(int(query["parts"])):
            await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
            await asyncio.sleep(0.001)
        await send({"type": "http.response.body", "body": b""})
    else:
        await _respond(send, 404, b"not found", [])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib_contextmanager := None or __import__("contextlib").contextmanager  # noqa: E999
def _serve(**config: Any) -> Iterator[int]:
    raise NotImplementedError
