"""The database work of one request: one session, committed once, before the answer is sent.

Every HTTP request and every mutating gRPC call gets a :class:`UnitOfWork`. Handlers read and
write through its session and never commit: the layer that owns the request commits the
handler's writes together with the request's idempotency record, in one transaction, and only
then sends the answer. So a retry can never apply a change twice, and an answer is never sent for
a change that did not commit.

A handler whose writes depend on what it reads first (a check that a container has no children,
that a key is free) calls :meth:`UnitOfWork.begin_write` before those reads. On PostgreSQL its
row locks do the rest. On SQLite, whose driver opens a transaction only at the first write (the
reads before it see whatever has committed by then, and a concurrent writer may commit between
the check and the write), it takes the database's write lock at once: the writers of this
process one after another (in the order they asked), each in ``BEGIN IMMEDIATE``. A lock not got
within the busy timeout is :class:`DatabaseBusyError`, a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

import anyio
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from .errors import ApiError
from .storage import db

__all__ = ["DatabaseBusyError", "UnitOfWork"]

_WRITERS: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()
"""The writers' turn, per SQLite engine (SQLite has one writer at a time anyway)."""


class DatabaseBusyError(ApiError):
    """The database's write lock was not got in time (503, with ``Retry-After``)."""

    status = 503
    error_type = "unavailable"

    def __init__(self, message: str = "The database is busy; retry") -> None:
        super().__init__(message, headers={"Retry-After": "1"})


_OWNER = "aiosdk_unit_of_work"
"""Key of a session's ``info``: the unit of work it belongs to."""


@event.listens_for(Session, "before_commit")
def _only_by_owner(session: Session) -> None:
    # One listener for every session (one per session would cost every request its setup).
    work = session.info.get(_OWNER)
    if work is not None and not work._committing:
        raise RuntimeError(
            "a request handler committed its own transaction; the unit of work commits it"
            " with the idempotency record (use flush())"
        )


def _writers(engine: Engine) -> asyncio.Lock:
    lock = _WRITERS.get(engine)
    if lock is None:
        lock = _WRITERS[engine] = asyncio.Lock()
    return lock


class UnitOfWork:
    """One request's session, opened on first use, committed only by :meth:`commit`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None
        self._committing = False
        self._before_commit: list[Callable[[], Awaitable[object]]] = []
        self._after_commit: list[Callable[[], None]] = []
        self._writing = False
        self._turn: asyncio.Lock | None = None

    @property
    def opened(self) -> bool:
        """Whether the request has used the database through this unit of work."""
        return self._session is not None

    @property
    def session(self) -> AsyncSession:
        """The request's session (a handler's writes are flushed, never committed, by it)."""
        if self._session is None:
            self._session = self._sessions()
            self._session.info[_OWNER] = self
        return self._session

    async def begin_write(self) -> None:
        """Make what the request reads from now on part of the transaction of its writes (call
        it before the reads the writes depend on); see the module's docstring."""
        if self._writing:
            return
        session = self.session
        bind = session.bind
        if bind is None or bind.dialect.name != "sqlite":
            self._writing = True
            return
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        if getattr(raw.driver_connection, "in_transaction", False):
            self._writing = True  # it has written already: it holds the lock
            return
        turn = _writers(connection.engine.sync_engine)
        try:
            with anyio.fail_after(db.busy_timeout_seconds()):
                await turn.acquire()
        except TimeoutError:
            raise DatabaseBusyError() from None
        self._turn = turn
        try:
            await session.execute(text("BEGIN IMMEDIATE"))
        except BaseException:
            self._end_turn()
            raise
        self._writing = True

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.release()

    def before_commit(self, work: Callable[[], Awaitable[object]]) -> None:
        """Run ``work`` inside the transaction, just before it commits."""
        self._before_commit.append(work)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transaction committed (never if it did not)."""
        self._after_commit.append(callback)

    async def commit(self) -> None:
        """Commit everything the request wrote (nothing happens if it opened no session)."""
        for work in self._before_commit:
            await work()
        if self._session is not None:
            self._committing = True
            try:
                await self._session.commit()
            finally:
                self._committing = False
                self._writing = False
                self._end_turn()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    async def close(self) -> None:
        """End the session; anything not committed is rolled back."""
        if self._session is not None:
            session, self._session = self._session, None
            try:
                await session.close()
            finally:
                self._writing = False
                self._end_turn()
