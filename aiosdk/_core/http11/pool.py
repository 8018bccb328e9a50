"""Keep-alive connection pool with a FIFO queue for requests beyond its size."""

from __future__ import annotations

import asyncio
import collections
import time

import httpx

from .connection import Connection, Origin


def _expire_waiter(waiter: asyncio.Future[Connection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.PoolTimeout("Timed out waiting for a connection."))


class PoolClosed(httpx.ConnectError):
    """The transport was closed: no connection is handed out or kept any more."""

    def __init__(self) -> None:
        super().__init__("The transport is closed.")


class ConnectionPool:
    """Bookkeeping of connection slots, idle keep-alive connections and waiters.

    A slot is held by every connection that is open or being opened.  ``acquire``
    hands out an idle connection of the origin or a free slot (the caller then
    connects); when neither exists the caller queues.  Released connections and
    slots go to the oldest live waiter first, so each request costs O(1).
    """

    def __init__(
        self,
        *,
        max_connections: int | None,
        max_keepalive_connections: int | None,
        keepalive_expiry: float | None,
    ) -> None:
        self._max_connections = max_connections
        self._max_idle = max_keepalive_connections
        self._expiry = keepalive_expiry
        self._slots = 0
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_count = 0
        self._active: set[Connection] = set()
        self._waiters: collections.deque[tuple[Origin, asyncio.Future[Connection | None]]] = (
            collections.deque()
        )
        self._deadlines: collections.deque[tuple[float, asyncio.Future[Connection | None]]] = (
            collections.deque()
        )
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    async def acquire(
        self, origin: Origin, timeout: float | None, *, fresh: bool = False
    ) -> Connection | None:
        """Return an idle connection to ``origin``, or None with a slot to connect.

        ``fresh`` skips the idle connections: the caller connects anew.
        """
        if self.closed:
            raise PoolClosed
        if self._idle_count and not fresh:
            conn = self._pop_idle(origin)
            if conn is not None:
                return conn
        if self._max_connections is None or self._slots < self._max_connections:
            self._slots += 1
            return None
        if self._idle_count and self._close_any_idle():
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Connection | None] = loop.create_future()
        self._waiters.append((origin, waiter))
        own_timer = None
        if timeout is not None:
            deadline = loop.time() + timeout
            deadlines = self._deadlines
            if not deadlines or deadlines[-1][0] <= deadline:
                # Deadlines in queue order share one timer (the usual case: one timeout).
                deadlines.append((deadline, waiter))
                if self._timer is None:
                    self._timer = loop.call_at(deadline, self._expire_waiters, loop)
            else:
                own_timer = loop.call_at(deadline, _expire_waiter, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                given = waiter.result()
                if given is None:
                    self.free_slot()
                else:
                    self._hand_over(given)
            raise
        finally:
            if own_timer is not None:
                own_timer.cancel()

    def _expire_waiters(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        deadlines = self._deadlines
        now = loop.time()
        while deadlines:
            deadline, waiter = deadlines[0]
            if not waiter.done():
                if deadline > now:
                    self._timer = loop.call_at(deadline, self._expire_waiters, loop)
                    return
                _expire_waiter(waiter)
            deadlines.popleft()

    def track(self, conn: Connection) -> None:
        """Register a connection that was opened in a slot from ``acquire``."""
        if self.closed:  # closed while it was connecting
            conn.abort()
            raise PoolClosed
        self._active.add(conn)

    def release(self, conn: Connection) -> None:
        """Take back a connection after its response: keep it alive or close it."""
        if not conn.reusable:
            self.discard(conn)
            return
        conn.release()
        self._hand_over(conn)

    def _hand_over(self, conn: Connection) -> None:
        """Give an idle connection to the oldest waiter, else keep it in the pool."""
        if conn.closed or self.closed:
            self.discard(conn)
            return
        waiters = self._waiters
        while waiters:
            origin, waiter = waiters.popleft()
            if waiter.done():
                continue
            if origin != conn.origin:
                self._active.discard(conn)
                conn.abort()
                waiter.set_result(None)
                return
            waiter.set_result(conn)
            return
        if self._max_idle is not None and self._idle_count >= self._max_idle:
            self.discard(conn)
            return
        self._active.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle is None:
            idle = self._idle[conn.origin] = []
        idle.append(conn)
        self._idle_count += 1

    def discard(self, conn: Connection) -> None:
        """Close a connection that must not be reused and free its slot."""
        conn.abort()
        self._active.discard(conn)
        self.free_slot()

    def free_slot(self) -> None:
        """Give a slot back: to the oldest waiter, else to the pool."""
        waiters = self._waiters
        while waiters:
            _, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._slots -= 1

    def close(self) -> None:
        """Close every connection, idle or in use, and fail every waiter; for good."""
        self.closed = True
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed())
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        for conn in self._active:
            conn.abort()
        self._idle.clear()
        self._active.clear()
        self._idle_count = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pop_idle(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        expiry = self._expiry
        cutoff = None if expiry is None else time.monotonic() - expiry
        # The newest connection is reused first; stale ones are dropped from the
        # bottom so connections that outlived their expiry do not accumulate.
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if conn.closed or (cutoff is not None and conn.idle_since < cutoff):
                conn.abort()
                self._slots -= 1
                continue
            if cutoff is not None:
                while idle and idle[0].idle_since < cutoff:
                    idle.pop(0).abort()
                    self._idle_count -= 1
                    self._slots -= 1
            self._active.add(conn)
            return conn
        return None

    def _close_any_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                idle.pop(0).abort()
                self._idle_count -= 1
                return True
        return False
