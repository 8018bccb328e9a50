"""The database work of one request: one session, committed once, before the answer is sent.

Every HTTP request and every mutating gRPC call gets a :class:`UnitOfWork`. Handlers read and
write through its session and never commit: the layer that owns the request commits the
handler's writes together with the request's idempotency record, in one transaction, and only
then sends the answer. So a retry can never apply a change twice, and an answer is never sent for
a change that did not commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

__all__ = ["UnitOfWork"]


class UnitOfWork:
    """One request's session, opened on first use, committed only by :meth:`commit`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None
        self._committing = False
        self._before_commit: list[Callable[[], Awaitable[object]]] = []
        self._after_commit: list[Callable[[], None]] = []

    @property
    def opened(self) -> bool:
        """Whether the request has used the database through this unit of work."""
        return self._session is not None

    @property
    def session(self) -> AsyncSession:
        """The request's session (a handler's writes are flushed, never committed, by it)."""
        if self._session is None:
            self._session = self._sessions()
            event.listen(self._session.sync_session, "before_commit", self._only_by_owner)
        return self._session

    def _only_by_owner(self, session: Session) -> None:
        if not self._committing:
            raise RuntimeError(
                "a request handler committed its own transaction; the unit of work commits it"
                " with the idempotency record (use flush())"
            )

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
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    async def close(self) -> None:
        """End the session; anything not committed is rolled back."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
