"""An asyncio event loop in a thread of its own, so a fake peer runs under any test backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["Connections", "LoopServer", "LoopThread", "abort_with_reset", "free_port"]

T = TypeVar("T")


class LoopThread:
    """Runs one asyncio loop in a daemon thread; the test's own loop (asyncio or trio) stays free.

    ``call`` is for sync fixtures (it blocks until the coroutine is done); tests poke a running
    peer through plain attributes or :meth:`soon`, never by blocking on it.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the loop and wait for its result (from outside any event loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def soon(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Schedule ``coro`` on the loop without waiting."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        """Cancel what still runs, stop the loop and join the thread."""

        async def cancel_rest() -> None:
            current = asyncio.current_task()
            rest = [task for task in asyncio.all_tasks() if task is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.call(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Connections:
    """The open connections of a fake peer, so that stopping it can close them.

    Closing a connection lets its handler finish on its own (it reads EOF), which is quieter than
    cancelling the handler task (asyncio logs a cancelled connection callback).
    """

    def __init__(self) -> None:
        self._open: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    def add(self, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[writer] = task

    def discard(self, writer: asyncio.StreamWriter) -> None:
        self._open.pop(writer, None)

    async def close_all(self) -> None:
        handlers = set(self._open.values())
        for writer in list(self._open):
            writer.transport.abort()
        if handlers:
            await asyncio.wait(handlers, timeout=5)


ServerT = TypeVar("ServerT", bound="LoopServer")


class LoopServer:
    """A fake peer: a TCP server on loopback, in a loop thread of its own.

    Subclasses answer connections in :meth:`handle`. ``sock`` is a socket bound in advance (the
    port is known before the server runs); with ``listening=False`` it refuses connections until
    the subclass starts serving.
    """

    def __init__(self, name: str, sock: socket.socket | None = None, listening: bool = True):
        self._sock = sock
        self._listening = listening
        self.port: int = sock.getsockname()[1] if sock is not None else 0
        self._connections = Connections()
        self._thread = LoopThread(name)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self: ServerT) -> ServerT:
        self._thread.call(self._start())
        return self

    async def _start(self) -> None:
        if self._sock is not None:
            self._server = await asyncio.start_server(
                self.handle, sock=self._sock, start_serving=self._listening
            )
        else:
            self._server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        self._thread.call(self._stop())
        self._thread.close()

    async def _stop(self) -> None:
        if self._server is not None:
            await _close_server(self._server)
        await self._connections.close_all()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def _close_server(server: asyncio.Server) -> None:
    """``server.close()``, minus a race of asyncio's (CPython gh-109564, still open).

    ``close()`` right after the listening socket accepted a connection (a client that connects
    and hangs up at once, then the test ends and stops this peer) leaves that connection's
    transport to be made by a task that runs after ``close()``: its constructor then fails
    ``Server._attach()``'s ``assert self._sockets is not None``, which asyncio swallows (it
    logs it in debug mode only). The half-made transport owns the accepted socket, no handler
    ever sees it and nothing closes it: the garbage collector finds it later, in whichever test
    runs then, whose ``ResourceWarning: unclosed transport`` is an error in this suite. So the
    listening sockets stop accepting first, the connections already accepted are set up (their
    handlers register them, and ``close_all`` closes them), and only then is the server closed.
    """
    loop = asyncio.get_running_loop()
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())  # also cancels an accept callback already queued
    accepting = [
        task
        for task in asyncio.all_tasks(loop)
        if getattr(task.get_coro(), "__qualname__", "").endswith("._accept_connection2")
    ]
    if accepting:
        await asyncio.wait(accepting, timeout=5)
    server.close()


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def abort_with_reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP RST instead of a FIN (SO_LINGER on, zero timeout)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
