"""Fixtures for the AsyncioTransport tests: real servers on loopback.

The repo-level conftest runs every test under blockbuster.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
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


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
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
        digest = hashlib.sha256()
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            digest.update(chunk)
            if not message.get("more_body"):
                break
        encoding = dict(scope["headers"]).get(b"transfer-encoding", b"-").decode()
        await _respond(send, 200, f"{size} {digest.hexdigest()} {encoding}".encode(), [])
    elif path == "/slow":
        await asyncio.sleep(float(query["delay"]))
        await _respond(send, 200, b"slow", [])
    elif path == "/large-header":
        received = dict(scope["headers"]).get(b"x-large", b"")
        await _respond(
            send, 200, str(len(received)).encode(), [(b"x-large", LARGE_HEADER.encode())]
        )
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


@contextlib.contextmanager
def _uvicorn(**options: Any) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="asyncio",
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    scheme = "https" if "ssl_certfile" in options else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def asgi_server() -> Iterator[str]:
    """Base URL of a plain HTTP uvicorn server running ``app`` in a thread."""
    with _uvicorn() as url:
        yield url


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_server(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of an HTTPS uvicorn server with a certificate from the local ``ca``."""
    directory: Path = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(certfile, append=True)
    cert.private_key_pem.write_to_path(keyfile)
    with _uvicorn(ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)) as url:
        yield url


@pytest.fixture
def client_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "ScriptedServer"], Awaitable[None]]


@dataclass
class ScriptedServer:
    """A raw asyncio TCP server whose per-connection behaviour is a test's coroutine."""

    url: str
    connections: int = 0
    open_connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


async def read_request(reader: asyncio.StreamReader, server: ScriptedServer) -> bytes:
    """Read one request head (and a Content-Length body) and record it."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            head += await reader.readexactly(int(line.split(b":")[1]))
    server.requests.append(head)
    return head


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Handler], Awaitable[ScriptedServer]]]:
    """Start raw TCP servers in the test's loop: ``server = await scripted(handler)``."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[None]] = set()

    async def start(handler: Handler) -> ScriptedServer:
        state = ScriptedServer(url="")

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            state.open_connections += 1
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer, state)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                state.open_connections -= 1
                state.closed.set()
                handlers.discard(task)

        srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        servers.append(srv)
        state.url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        return state

    yield start
    for task in list(handlers):
        task.cancel()
    for srv in servers:
        srv.close()
        await srv.wait_closed()
    await asyncio.gather(*handlers, return_exceptions=True)


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks behind; collect garbage so leaked sockets warn."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0.01)
    # anyio's test runner starts a task of its own for each fixture step.
    leaked = [
        task
        for task in asyncio.all_tasks() - before
        if "_call_in_runner_task" not in getattr(task.get_coro(), "__qualname__", "")
    ]
    gc.collect()
    assert not leaked, f"leaked tasks: {leaked}"
