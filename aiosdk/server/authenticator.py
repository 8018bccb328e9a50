"""Who is asking: bearer tokens and Basic credentials checked against the database, with a
cache in front.

Looking a token up in the database on every request cost the server most of its time on small
requests, so principals are cached in memory, keyed by the token's hash. Revocation stays
immediate: a revoke publishes a notification in its own transaction (see :mod:`.notify`), which
drops the cached entry in this process before the revoke is answered, and in every other process
serving the database as soon as PostgreSQL delivers it. While notifications may be missed (the
listening connection is down) nothing is served from the cache. Expiry is checked on every hit.

Basic credentials (``no_session`` logins: a username and password on every request) are checked
with Argon2 once, then cached by a keyed hash of the pair for the same time as tokens, so that
the KDF does not run per request. Changing a user (a new password, disabling) announces
:meth:`Authenticator.user_changed` on the same channel, which drops every cached credential of
the user, Basic or token, as a revocation does. Failed Basic credentials count toward the login
rate limits (:mod:`.accounts.ratelimit`), and are not checked at all while those are exceeded.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from .accounts.models import LoginSession, User
from .accounts.ratelimit import LoginLimiter, could_be_a_user
from .auth import Principal, hash_token
from .config import AccountSettings
from .keyring import Keyring
from .logs import logger
from .notify import MISSED, Notifier
from .storage import Token, utcnow
from .unit_of_work import UnitOfWork

__all__ = ["Authenticator"]


REVOCATIONS = "token_revoked"
"""The notification channel of revoked tokens; the payload is the token id, or
``"user:" + username`` for a user whose credentials must all be checked again."""
_USER_CHANGED = "user:"
_BASIC = "basic:"

_CACHE_TTL = 60.0
_CACHE_SIZE = 10_000
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass
class _Entry:
    principal: Principal
    cached_at: float
    last_used_at: datetime | None


class Authenticator:
    """Turns a bearer token, or Basic credentials, into a :class:`Principal` (shared by HTTP
    and gRPC)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        notifier: Notifier,
        *,
        accounts: AccountSettings | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self._sessions = sessions
        self._notifier = notifier
        # (the server's keyring: every process on the database must key the counts alike)
        self._limiter = LoginLimiter(sessions, accounts or AccountSettings(), keyring)
        self._cache: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._generation = 0  # bumped by every invalidation: a lookup racing one is not cached
        self._touching: set[asyncio.Task[None]] = set()
        self._verifying: dict[str, asyncio.Task[Principal | None]] = {}
        self._basic_key = secrets.token_bytes(32)  # the cache keeps no plain hash of a password
        notifier.subscribe(REVOCATIONS, self._on_revoked)

    @property
    def login_limiter(self) -> LoginLimiter:
        """The limits on failed logins (Basic credentials, and the login route)."""
        return self._limiter

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

    async def authenticate_basic(
        self, username: str, password: str, address: str | None
    ) -> Principal | None:
        """The user ``username`` if ``password`` is theirs and they are not disabled, else
        ``None`` (counted as a failed login of ``username`` from ``address``, unless no user
        could have that name).

        Raises :class:`~.accounts.ratelimit.LoginRateLimitedError` while failed logins of
        ``username`` or from ``address`` exceed the limits (the password is not checked then).
        """
        if not could_be_a_user(username):
            return None
        pair = f"{username}\x00{password}".encode("utf-8", "surrogatepass")
        digest = _BASIC + hmac.new(self._basic_key, pair, hashlib.sha256).hexdigest()
        entry = self._cache.get(digest) if self._notifier.listening else None
        if entry is not None and time.monotonic() - entry.cached_at < _CACHE_TTL:
            self._cache.move_to_end(digest)
            return entry.principal
        # Concurrent requests with the same credentials share one check (one Argon2 run, one
        # failure counted: the same guess); the check goes on if the first of them goes away.
        task = self._verifying.get(digest)
        if task is None:
            task = asyncio.create_task(self._check_basic(digest, username, password, address))
            self._verifying[digest] = task
            task.add_done_callback(lambda done: _forget(self._verifying, digest, done))
        return await asyncio.shield(task)

    async def _check_basic(
        self, digest: str, username: str, password: str, address: str | None
    ) -> Principal | None:
        generation = self._generation
        verified = await self._limiter.check_password(username, password, address)
        if verified is None:
            return None
        principal = Principal(name=verified.username, is_admin=False, token_id="")
        if generation == self._generation:
            self._remember(digest, _Entry(principal, time.monotonic(), None))
        return principal

    def revoked(self, uow: UnitOfWork, token_id: str) -> None:
        """Announce, when ``uow`` commits, that ``token_id`` no longer authenticates."""
        self._notifier.publish(uow, REVOCATIONS, token_id)

    def user_changed(self, uow: UnitOfWork, username: str) -> None:
        """Announce, when ``uow`` commits, that what was checked of ``username`` must be checked
        again: their password changed, they were disabled... Every cached credential of theirs
        (Basic credentials, tokens) is dropped, in every server process, as by :meth:`revoked`."""
        self._notifier.publish(uow, REVOCATIONS, _USER_CHANGED + username)

    async def aclose(self) -> None:
        """Wait for the last-used updates and credential checks still running."""
        running = [*self._touching, *self._verifying.values()]
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    def _on_revoked(self, token_id: str) -> None:
        self._generation += 1
        if token_id == MISSED:
            self._cache.clear()
            return
        if token_id.startswith(_USER_CHANGED):
            name = token_id.removeprefix(_USER_CHANGED)
            stale = [d for d, e in self._cache.items() if e.principal.name == name]
        else:
            stale = [d for d, e in self._cache.items() if e.principal.token_id == token_id]
        for digest in stale:
            del self._cache[digest]

    def _remember(self, digest: str, entry: _Entry) -> None:
        self._cache[digest] = entry
        self._cache.move_to_end(digest)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _look_up(
        self, digest: str, now: datetime
    ) -> tuple[Principal | None, datetime | None]:
        login_token = aliased(Token)
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(
                        Token,
                        User.disabled_at,
                        LoginSession.revoked_at,
                        LoginSession.expires_at,
                        login_token.revoked_at,
                    )
                    .outerjoin(User, User.username == Token.owner)
                    .outerjoin(LoginSession, LoginSession.id == Token.session_id)
                    .outerjoin(login_token, login_token.id == LoginSession.token_id)
                    .where(Token.secret_hash == digest)
                )
            ).first()
            if found is None:
                return None, None
            token, disabled_at, ended_at, session_end, login_revoked_at = found
            if token.revoked_at is not None or disabled_at is not None:
                return None, None
            if token.expires_at is not None and token.expires_at <= now:
                return None, None
            if token.session_id is not None and (
                ended_at is not None
                or session_end is None
                or session_end <= now
                or login_revoked_at is not None
            ):
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
            scope=token.scope,
            session_id=token.session_id,
            # (a session ends no later than the API token a token login opened it with)
            session_expires_at=session_end if token.session_id is not None else None,
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


def _forget(
    verifying: dict[str, asyncio.Task[Principal | None]],
    digest: str,
    task: asyncio.Task[Principal | None],
) -> None:
    if verifying.get(digest) is task:
        del verifying[digest]
    if not task.cancelled():
        task.exception()  # retrieved: every waiter may have gone away


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
