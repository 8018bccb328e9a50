"""Login sessions: opened by a login, kept alive by rotating refresh tokens, ended by a logout.

A session hands out short-lived access tokens, stored as rows of ``tokens`` (label
``"session"``, ``session_id`` set, owner the username), so that the authenticator's cache and
revocation serve them as any token; and one refresh token at a time. A refresh uses the newest
refresh token up and hands out the next one with a new access token; presenting a refresh token
that was already used (a stolen copy, or its owner's after a thief refreshed) revokes the whole
session, every access token of it at once. Nothing extends a session past its ``expires_at``,
nor the access tokens past it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..auth import generate_token, hash_token
from ..authenticator import Authenticator
from ..config import AccountSettings
from ..errors import InvalidRequestError, UnauthenticatedError
from ..storage import Token, utcnow
from ..unit_of_work import UnitOfWork
from .models import LoginSession, RefreshToken, User
from .ratelimit import LoginLimiter, VerifiedUser

__all__ = [
    "ACCESS_TOKEN_LABEL",
    "INVALID_CREDENTIALS",
    "INVALID_REFRESH_TOKEN",
    "SessionTokens",
    "end_session",
    "end_sessions_opened_with",
    "log_in_with_password",
    "log_in_with_token",
    "open_session",
    "refresh_session",
    "revoke_user_sessions",
]

ACCESS_TOKEN_LABEL = "session"
"""The label of every access token of a session."""
INVALID_CREDENTIALS = "Invalid credentials"
"""The one answer to a failed login, whatever part of it was wrong."""
INVALID_REFRESH_TOKEN = "Invalid, expired or revoked refresh token"


@dataclass(frozen=True)
class SessionTokens:
    """What a login or a refresh hands out. The secrets are shown once (the server keeps
    hashes) and never in a repr."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    """When the access token expires."""
    session_id: str
    username: str

    def expires_in(self, now: datetime | None = None) -> int:
        """Whole seconds until the access token expires (rounded up, never negative)."""
        left = (self.expires_at - (now or utcnow())).total_seconds()
        return max(0, math.ceil(left))


async def open_session(
    work: UnitOfWork,
    settings: AccountSettings,
    user: User | VerifiedUser,
    *,
    token: Token | None = None,
) -> SessionTokens:
    """Open a session for ``user`` in ``work``: a login with a password (``user`` as it was
    verified), or with the API ``token`` (whose scope its access tokens inherit, and which it
    never outlives). It ends ``settings.session_ttl`` from now at the latest.

    What was checked before is checked again in ``work``, after the session's row is written
    and with the user's row (and the token's) locked: raises :class:`UnauthenticatedError`,
    with ``work`` rolled back, if since then the user was disabled, their password changed (a
    password login), or the token was revoked or expired (a token login). A password reset or a
    disabling racing the login therefore either sees the new session, and ends it, or is seen
    by it (see :func:`_still_valid`).
    """
    now = utcnow()
    expires_at = now + timedelta(seconds=settings.session_ttl)
    if token is not None and token.expires_at is not None:
        expires_at = min(expires_at, token.expires_at)
    login = LoginSession(
        user_id=user.id,
        created_at=now,
        expires_at=expires_at,
        scope=None if token is None else token.scope,
        token_id=None if token is None else token.id,
    )
    work.session.add(login)
    await work.session.flush()
    if not await _still_valid(work.session, user, token, now):
        await work.session.rollback()
        raise UnauthenticatedError(INVALID_CREDENTIALS)
    return await _issue(work.session, settings, login, user.username, generation=0, now=now)


async def _still_valid(
    session: AsyncSession, user: User | VerifiedUser, token: Token | None, now: datetime
) -> bool:
    """Whether the login checked against ``user`` (and ``token``) still holds, read again with
    their rows locked, in the transaction that just wrote the session.

    PostgreSQL: the locking read waits for a password change or a disabling that locked the
    row first (users.update_user takes it ``FOR UPDATE`` before it changes anything; revoking a
    token updates its row) and reads what it committed; one that comes after waits for this
    login to commit, and then finds its session to end. The lock is ``FOR SHARE``: the session's
    insert already holds ``FOR KEY SHARE`` on both rows (its foreign keys), and two logins of one
    user upgrading that to ``FOR UPDATE`` would deadlock each other; ``FOR SHARE`` conflicts with
    every change of the row all the same, and not with another login's.

    SQLite (no row locks): the session's insert took the database's write lock (pysqlite opens
    the transaction at the first write; the reads before it ran outside any, in autocommit), so
    nothing can commit a change until this login does, and this read sees the latest one.
    """
    found = (
        await session.execute(
            select(User.password_hash, User.disabled_at)
            .where(User.id == user.id)
            .with_for_update(read=True)
        )
    ).first()
    if found is None or found.disabled_at is not None:
        return False
    if token is None:
        return found.password_hash is not None and found.password_hash == user.password_hash
    opened_with = (
        await session.execute(
            select(Token.revoked_at, Token.expires_at)
            .where(Token.id == token.id)
            .with_for_update(read=True)
        )
    ).first()
    return (
        opened_with is not None
        and opened_with.revoked_at is None
        and (opened_with.expires_at is None or opened_with.expires_at > now)
    )


async def log_in_with_password(
    work: UnitOfWork,
    limiter: LoginLimiter,
    settings: AccountSettings,
    username: str,
    password: str,
    address: str | None,
) -> SessionTokens:
    """Open a session for ``username`` if ``password`` is theirs (see :func:`open_session`).

    The password is checked by :meth:`~.ratelimit.LoginLimiter.check_password` (as Basic
    credentials are) with no connection of ``work`` open; only the session is written in it.
    Raises :class:`~.ratelimit.LoginRateLimitedError` while ``username`` or ``address`` has
    too many failed logins (the password is not checked then), and :class:`UnauthenticatedError`
    with the same message whatever is wrong (counted as a failed login, unless no user could
    have the name; a success clears the account's count).
    """
    verified = await limiter.check_password(username, password, address)
    if verified is None:
        raise UnauthenticatedError(INVALID_CREDENTIALS)
    return await open_session(work, settings, verified)


async def log_in_with_token(
    work: UnitOfWork,
    limiter: LoginLimiter,
    settings: AccountSettings,
    secret: str,
    address: str | None,
) -> SessionTokens:
    """Open a session for the user owning the API token ``secret``, with its scope and
    ending no later than it (see :func:`open_session`).

    Raises :class:`~.ratelimit.LoginRateLimitedError` while ``address`` has too many failed
    logins; :class:`UnauthenticatedError` for a token that is unknown, expired or revoked (a
    failed login), or whose owner is no user, or a disabled one; :class:`InvalidRequestError`
    for the admin token and for a session's own access token. The attempt is counted against
    ``address`` before the token is looked up (in a short session of its own), and given back
    unless the token was no good.
    """
    attempt = await limiter.reserve(None, address)
    now = utcnow()
    async with limiter.sessions() as lookup:
        token = await lookup.scalar(select(Token).where(Token.secret_hash == hash_token(secret)))
        if (
            token is None
            or token.revoked_at is not None
            or (token.expires_at is not None and token.expires_at <= now)
        ):
            raise UnauthenticatedError(INVALID_CREDENTIALS)  # (counted)
        user = await lookup.scalar(select(User).where(User.username == token.owner))
    await attempt.succeeded()  # whatever follows, no guess at a token
    if token.is_admin:
        raise InvalidRequestError("The admin token cannot open a session")
    if token.session_id is not None:
        raise InvalidRequestError(
            "A session's access token cannot open another session; refresh the session instead"
        )
    if user is None or user.disabled_at is not None:
        raise UnauthenticatedError(INVALID_CREDENTIALS)
    return await open_session(work, settings, user, token=token)


async def refresh_session(
    work: UnitOfWork,
    sessions: async_sessionmaker[AsyncSession],
    authenticator: Authenticator,
    settings: AccountSettings,
    secret: str,
) -> SessionTokens:
    """Use the refresh token ``secret`` up and hand out the session's next tokens, in ``work``.

    Raises :class:`UnauthenticatedError` for an unknown refresh token, or one of a session that
    ended; for one already used, after revoking its session (committed at once, in a
    transaction of its own: the request's work is rolled back with the refusal).
    """
    now = utcnow()
    digest = hash_token(secret)
    found = (
        await work.session.execute(
            select(RefreshToken, LoginSession, User)
            .join(LoginSession, LoginSession.id == RefreshToken.session_id)
            .join(User, User.id == LoginSession.user_id)
            .where(RefreshToken.secret_hash == digest)
        )
    ).first()
    if found is None:
        raise UnauthenticatedError(INVALID_REFRESH_TOKEN)
    refresh, login, user = found
    if login.revoked_at is not None or login.expires_at <= now or user.disabled_at is not None:
        raise UnauthenticatedError(INVALID_REFRESH_TOKEN)
    if login.token_id is not None:  # opened with an API token: it must still be good
        opened_with = await work.session.get(Token, login.token_id)
        if opened_with is None or opened_with.revoked_at is not None:
            raise UnauthenticatedError(INVALID_REFRESH_TOKEN)
    # Used up in one conditional statement: of two refreshes racing with one token, one wins.
    claimed = await work.session.execute(
        update(RefreshToken)
        .where(RefreshToken.secret_hash == digest, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        session_id = login.id  # (the rollback expires the objects loaded)
        await work.session.rollback()  # (SQLite: let go of the write lock the update took)
        await _revoke_now(sessions, authenticator, session_id, "refresh_reuse")
        raise UnauthenticatedError(INVALID_REFRESH_TOKEN)
    return await _issue(
        work.session, settings, login, user.username, generation=refresh.generation + 1, now=now
    )


async def end_session(
    work: UnitOfWork, authenticator: Authenticator, session_id: str, reason: str
) -> None:
    """Revoke the session ``session_id`` and every access token of it, in ``work``: they stop
    authenticating once it commits."""
    await _end(work, authenticator, LoginSession.id == session_id, reason)


async def revoke_user_sessions(
    work: UnitOfWork, authenticator: Authenticator, user_id: str, reason: str
) -> None:
    """Revoke every live session of the user ``user_id`` and their access tokens, in ``work``
    (a user disabled, ...)."""
    await _end(work, authenticator, LoginSession.user_id == user_id, reason)


async def end_sessions_opened_with(
    work: UnitOfWork, authenticator: Authenticator, token_id: str
) -> None:
    """Revoke the sessions that a login with the API token ``token_id`` opened (it was just
    revoked: they must not outlive it), in ``work``."""
    await _end(work, authenticator, LoginSession.token_id == token_id, "token_revoked")


async def _end(
    work: UnitOfWork, authenticator: Authenticator, which: ColumnElement[bool], reason: str
) -> None:
    now = utcnow()
    live = list(
        await work.session.scalars(
            select(LoginSession.id).where(which, LoginSession.revoked_at.is_(None))
        )
    )
    if not live:
        return
    await work.session.execute(
        update(LoginSession)
        .where(LoginSession.id.in_(live))
        .values(revoked_at=now, revoked_reason=reason)
    )
    await _revoke_access_tokens(work, authenticator, live, now)


async def _revoke_access_tokens(
    work: UnitOfWork, authenticator: Authenticator, session_ids: list[str], now: datetime
) -> None:
    tokens = list(
        await work.session.scalars(
            select(Token.id).where(Token.session_id.in_(session_ids), Token.revoked_at.is_(None))
        )
    )
    if tokens:
        await work.session.execute(update(Token).where(Token.id.in_(tokens)).values(revoked_at=now))
    await work.session.flush()
    for token_id in tokens:
        authenticator.revoked(work, token_id)


async def _revoke_now(
    sessions: async_sessionmaker[AsyncSession],
    authenticator: Authenticator,
    session_id: str,
    reason: str,
) -> None:
    own = UnitOfWork(sessions)
    try:
        await end_session(own, authenticator, session_id, reason)
        await own.commit()
    finally:
        await own.close()


async def _issue(
    session: AsyncSession,
    settings: AccountSettings,
    login: LoginSession,
    username: str,
    *,
    generation: int,
    now: datetime,
) -> SessionTokens:
    """A new access token and refresh token of ``login``."""
    access, refresh = generate_token(), generate_token()
    expires_at = min(now + timedelta(seconds=settings.access_token_ttl), login.expires_at)
    session.add(
        Token(
            label=ACCESS_TOKEN_LABEL,
            secret_hash=hash_token(access),
            owner=username,
            is_admin=False,
            scope=login.scope,
            session_id=login.id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.add(
        RefreshToken(
            secret_hash=hash_token(refresh),
            session_id=login.id,
            generation=generation,
            created_at=now,
        )
    )
    await session.flush()
    return SessionTokens(access, refresh, expires_at, login.id, username)
