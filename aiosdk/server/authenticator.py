"""Who is asking: bearer tokens checked against the database, with a cache in front.

Looking a token up in the database on every request cost the server most of its time on small
requests, so principals are cached in memory, keyed by the token's hash. Revocation stays
immediate: a revoke publishes a notification in its own transaction (see :mod:`.notify`), which
drops the cached entry in this process before the revoke is answered, and in every other process
serving the database as soon as PostgreSQL delivers it. While notifications may be missed (the
listening connection is down) nothing is served from the cache. Expiry is checked on every hit.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .auth import Principal, hash_token
from .logs import logger
from .notify import MISSED, Notifier
from .storage import Token, utcnow
from .unit_of_work import UnitOfWork

__all__ = ["Authenticator"]


REVOCATIONS = "token_revoked"
"""The notification channel of revoked tokens; the payload is the token id."""

_CACHE_TTL = 60.0
_CACHE_SIZE = 10_000
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass
class _Entry:
    principal: Principal
    cached_at: float
    last_used_at: datetime | None


class Authenticator:
    """Turns a bearer token into a :class:`Principal` (shared by HTTP and gRPC)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], notifier: Notifier) -> None:
        self._sessions = sessions
        self._notifier = notifier
        self._cache: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._generation = 0  # bumped by every invalidation: a lookup racing one is not cached
        self._touching: set[asyncio.Task[None]] = set()
        notifier.subscribe(REVOCATIONS, self._on_revoked)

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal owning ``secret``, or ``None`` if it is unknown, revoked or expired."""
        digest = hash_token(secret)
        now = utcnow()
        entry = self._cache.get(digest) if self._notifier.listening else None
        if entry is not None and time.monotonic() - entry.cached_at < _CACHE_TTL:
            expires_at = entry.principal.expires_at
            if expires_at is not None and expires_at <= now:
                return None
            self._cache.move_to_end(digest)
            if _due(entry.last_used_at, now):
                entry.last_used_at = now
                self._touch_later(entry.principal.token_id, now)
            return entry.principal
        generation = self._generation
        principal, last_used_at = await self._look_up(digest, now)
        if principal is not None and generation == self._generation:
            self._remember(digest, _Entry(principal, time.monotonic(), last_used_at))
        return principal

    def revoked(self, uow: UnitOfWork, token_id: str) -> None:
        """Announce, when ``uow`` commits, that ``token_id`` no longer authenticates."""
        self._notifier.publish(uow, REVOCATIONS, token_id)

    async def aclose(self) -> None:
        """Wait for the last-used updates still running."""
        if self._touching:
            await asyncio.gather(*self._touching, return_exceptions=True)

    def _on_revoked(self, token_id: str) -> None:
        self._generation += 1
        if token_id == MISSED:
            self._cache.clear()
            return
        for digest in [d for d, e in self._cache.items() if e.principal.token_id == token_id]:
            del self._cache[digest]

    def _remember(self, digest: str, entry: _Entry) -> None:
        self._cache[digest] = entry
        self._cache.move_to_end(digest)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _look_up(
        self, digest: str, now: datetime
    ) -> tuple[Principal | None, datetime | None]:
        async with self._sessions() as session:
            token = await session.scalar(select(Token).where(Token.secret_hash == digest))
            if token is None or token.revoked_at is not None:
                return None, None
            if token.expires_at is not None and token.expires_at <= now:
                return None, None
            last_used_at = token.last_used_at
            if _due(last_used_at, now):
                await _touch(session, token.id, now)
                last_used_at = now
        principal = Principal(
            name=token.owner,
            is_admin=token.is_admin,
            token_id=token.id,
            expires_at=token.expires_at,
        )
        return principal, last_used_at

    def _touch_later(self, token_id: str, now: datetime) -> None:
        # Recording when a token was last used must not hold up the request it authenticates.
        async def touch() -> None:
            try:
                async with self._sessions() as session:
                    await _touch(session, token_id, now)
            except Exception:
                logger.warning("Recording the last use of a token failed", exc_info=True)

        task = asyncio.create_task(touch())
        self._touching.add(task)
        task.add_done_callback(self._touching.discard)


def _due(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or last_used_at < now - _LAST_USED_RESOLUTION


async def _touch(session: AsyncSession, token_id: str, now: datetime) -> None:
    await session.execute(
        update(Token)
        .where(Token.id == token_id)
        .where(or_(Token.last_used_at.is_(None), Token.last_used_at < now - _LAST_USED_RESOLUTION))
        .values(last_used_at=now)
    )
    await session.commit()
