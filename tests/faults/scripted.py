"""A real HTTP/1.1 server on loopback that answers by script: statuses, resets, hang-ups, delays.

Each request takes the next action of the script (then ``then`` for every request after it) and is
recorded with its method, path, headers, body and arrival time. It speaks just enough HTTP/1.1 for
the SDK (keep-alive, ``Content-Length`` and chunked request bodies) and answers the SDK's routes
with well-formed JSON, so ``server_info()`` and ``tokens.create()`` work against it.
"""

from __future__ import annotations

import asyncio
import http
import itertools
import json
import math
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate

from ._loop_thread import LoopServer, abort_with_reset, free_port

__all__ = [
    "HANGUP",
    "RESET",
    "Action",
    "Hangup",
    "Reset",
    "Respond",
    "ScriptedServer",
    "Seen",
    "delayed",
    "fail",
    "rate_limited_until",
]

Headers = Mapping[str, str]


@dataclass(frozen=True)
class Respond:
    """Answer with ``status`` after ``delay`` seconds; ``headers`` may be computed at send time."""

    status: int = 200
    headers: Headers | Callable[[], Headers] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Reset:
    """Read the request, then reset the connection (RST) without answering."""


@dataclass(frozen=True)
class Hangup:
    """Read the request, then close the connection (FIN) without answering."""


Action = Respond | Reset | Hangup
RESET = Reset()
HANGUP = Hangup()


def fail(status: int, *, retry_after: str | None = None) -> Respond:
    """An error status, with a ``Retry-After`` header if given."""
    return Respond(status, {"Retry-After": retry_after} if retry_after is not None else {})


def rate_limited_until(seconds_ahead: int) -> Respond:
    """A 429 whose ``Retry-After`` is an HTTP date at least ``seconds_ahead - 1`` s ahead.

    HTTP dates have whole-second resolution, so the date is rounded up: the wait it asks for is
    between ``seconds_ahead - 1`` and ``seconds_ahead`` seconds from when the answer is sent.
    """

    def headers() -> Headers:
        return {"Retry-After": formatdate(math.floor(time.time()) + seconds_ahead, usegmt=True)}

    return Respond(429, headers)


def delayed(seconds: float, status: int = 200) -> Respond:
    """Answer only after ``seconds`` (or never, if the client gives up first)."""
    return Respond(status, delay=seconds)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it; ``at`` is its ``time.monotonic()`` arrival."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    at: float

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


class ScriptedServer(LoopServer):
    """The scripted server, in its own thread and asyncio loop (so it serves trio tests too).

    With ``listening=False`` the port is bound but refuses connections until :meth:`listen`.
    """

    def __init__(self, *, listening: bool = True) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        super().__init__(f"scripted-http-{sock.getsockname()[1]}", sock, listening)
        self._actions: list[Action] = []
        self._then: Action = Respond()
        self._seen: list[Seen] = []
        self._ids = itertools.count(1)
        self.open_connections = 0
        self.grpc_port: int | None = None
        """The gRPC port ``GET /api/v1/`` names (default: a free one, where nothing listens)."""

    def listen(self) -> None:
        """Start accepting connections (for a server made with ``listening=False``).

        The socket listens at once, from the caller's thread, so a connection attempted right
        after this returns is queued by the kernel, never refused.
        """
        assert self._sock is not None
        assert self._server is not None
        self._sock.listen(128)
        self._thread.soon(self._server.start_serving())

    # -- the script ------------------------------------------------------------------------

    def script(self, *actions: Action, then: Action | None = None) -> None:
        """Answer the next requests with ``actions``, and every request after them with ``then``.

        ``then`` defaults to a plain success.
        """
        self._actions = list(actions)
        self._then = then if then is not None else Respond()

    @property
    def requests(self) -> list[Seen]:
        """Every request received so far, in arrival order."""
        return list(self._seen)

    def seen(self, method: str) -> list[Seen]:
        """The requests received with ``method``."""
        return [request for request in self._seen if request.method == method]

    def _next_action(self) -> Action:
        return self._actions.pop(0) if self._actions else self._then

    # -- the protocol ----------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self._connections.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self._seen.append(request)
                action = self._next_action()
                if isinstance(action, Reset):
                    abort_with_reset(writer)
                    return
                if isinstance(action, Hangup):
                    return
                if action.delay and await _peer_closed_within(reader, action.delay):
                    return
                writer.write(self._render(action, request))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_connections -= 1
            self._connections.discard(writer)
            writer.close()

    def _render(self, action: Respond, request: Seen) -> bytes:
        request_id = f"req-{next(self._ids)}"
        body = action.body
        if body is None:
            payload = (
                _ok_payload(request, self.port, self.grpc_port)
                if action.status < 400
                else {"error": {"message": f"scripted {action.status}", "request_id": request_id}}
            )
            body = b"" if payload is None else json.dumps(payload).encode()
        status = 204 if action.status == 200 and not body else action.status
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        if status != 204:
            headers["Content-Length"] = str(len(body))
        extra = action.headers() if callable(action.headers) else action.headers
        headers.update(extra)
        phrase = http.HTTPStatus(status).phrase
        head = f"HTTP/1.1 {status} {phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        return (head + "\r\n").encode("latin-1") + body


async def _read_request(reader: asyncio.StreamReader) -> Seen | None:
    """The next request on the connection, or ``None`` when the client closed it cleanly."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    at = time.monotonic()
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = b""
    path, _, query = target.partition("?")
    return Seen(method, path, query, headers, body, at)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return b"".join(chunks)
        chunks.append(chunk[:-2])


async def _peer_closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait ``seconds``; True as soon as the client closes the connection meanwhile."""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except asyncio.TimeoutError:
        return False
    return not data


def _ok_payload(request: Seen, port: int, grpc_port: int | None) -> object:
    """A well-formed success body for the SDK's routes (``None``: no content)."""
    path = request.path.rstrip("/")
    now = "2024-01-01T00:00:00+00:00"
    if path == "/api/v1" and request.method == "GET":
        return {
            "name": "scripted",
            "version": "0",
            "api_version": "v1",
            # Unless told otherwise, nothing serves gRPC: a free port, so a stray gRPC call is
            # refused at once.
            "grpc": {"host": "127.0.0.1", "port": grpc_port or free_port()},
            "principal": "scripted",
            "limits": {"max_page_size": 1000, "max_request_body_bytes": 1 << 24},
        }
    if path == "/api/v1/tokens" and request.method == "POST":
        label = json.loads(request.body or b"{}").get("label", "")
        return {
            "id": f"tok-{port}-{request.at}",
            "label": label,
            "owner": "scripted",
            "created_at": now,
            "expires_at": None,
            "token": "secret",
        }
    if path == "/api/v1/tokens" and request.method == "GET":
        return {"items": [], "next_page_token": None}
    if path.startswith("/api/v1/tokens/") and request.method == "GET":
        token_id = path.rsplit("/", 1)[1]
        return {
            "id": token_id,
            "label": "",
            "owner": "scripted",
            "created_at": now,
            "expires_at": None,
        }
    if request.method == "DELETE":
        return None
    return {}
