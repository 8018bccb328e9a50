"""Client connections: a cap per listening port, and accept errors logged at a bounded rate."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator, Mapping
from typing import Any

from .logs import RateLimitedWarning

__all__ = [
    "LINGER_SECONDS",
    "ConnectionSlots",
    "default_max_connections",
    "linger",
    "log_accept_errors",
]

LINGER_SECONDS = 1.0
"""How long a refused connection is kept open, twice: before its answer, waiting for the
client's first bytes (a client that sends none is closed silently), and after, reading and
dropping what the client still sends.

Closing a socket with unread data makes the kernel send a reset, which can destroy the answer
before the client reads it: a client then sees a broken connection instead of the answer.
"""


def linger(transport: asyncio.Transport) -> asyncio.TimerHandle:
    """End the sending side of ``transport`` once its answer is out, and close it after
    :data:`LINGER_SECONDS` (its protocol drops what it still receives meanwhile)."""
    if transport.can_write_eof():
        transport.write_eof()
    return asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)


_MAX_DEFAULT_CONNECTIONS = 1024
_ACCEPT_ERROR = "socket.accept() out of system resource"  # asyncio's context message


def default_max_connections() -> int:
    """The default connection cap of each port: a quarter of the descriptor limit, at most 1024.

    The HTTP and gRPC ports together then hold at most half the descriptors, leaving the rest
    for refused connections still being answered, the database and files.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return _MAX_DEFAULT_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_DEFAULT_CONNECTIONS
    return max(1, min(_MAX_DEFAULT_CONNECTIONS, soft // 4))


class ConnectionSlots:
    """The connections one port may keep open: taken when one is accepted, given back at close.

    ``name`` names the port in the warning, logged at a bounded rate, that connections are
    being refused.
    """

    def __init__(self, limit: int, name: str) -> None:
        self.limit = limit
        self.name = name
        self.in_use = 0
        self._refusals = RateLimitedWarning()

    def acquire(self) -> bool:
        """Take a slot; ``False`` when all are in use (the connection is to be refused)."""
        if self.in_use >= self.limit:
            self._refusals.warning(
                "The %s port is at its limit of %d connections: refusing new ones",
                self.name,
                self.limit,
            )
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        self.in_use -= 1


@contextlib.contextmanager
def log_accept_errors(
    loop: asyncio.AbstractEventLoop, listeners: Mapping[socket.socket, str]
) -> Generator[None, None, None]:
    """Log ``accept()`` failures of ``listeners`` (socket: name) once per 10 s each.

    When the process runs out of descriptors, asyncio reports every failed ``accept()`` to the
    loop's exception handler with a traceback, thousands of times a second. Inside this context
    those reports become one warning per listener per 10 s; any other report goes on to the
    handler that was there before.
    """
    warnings = {sock.fileno(): (name, RateLimitedWarning()) for sock, name in listeners.items()}
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        sock = context.get("socket")
        listener = warnings.get(sock.fileno()) if sock is not None else None
        if context.get("message") == _ACCEPT_ERROR and listener is not None:
            name, warning = listener
            warning.warning(
                "The %s port cannot accept connections: %s; lower Limits.max_connections or "
                "raise the file descriptor limit",
                name,
                context.get("exception"),
            )
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    try:
        yield
    finally:
        if loop.get_exception_handler() is handle:
            loop.set_exception_handler(previous)
