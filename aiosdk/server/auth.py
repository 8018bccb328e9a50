"""Bearer tokens: generation, hashing, parsing and the admin token, shared by HTTP and gRPC.

Checking a token on a request is :class:`~aiosdk.server.authenticator.Authenticator`'s job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .logs import logger
from .storage import Token, utcnow
from .unit_of_work import UnitOfWork

__all__ = [
    "ADMIN_PRINCIPAL",
    "ANONYMOUS",
    "READ_SCOPE",
    "TOKEN_PREFIX",
    "AdminTokenState",
    "Principal",
    "ensure_admin_token",
    "mint_admin_token",
    "generate_token",
    "hash_token",
    "parse_basic",
    "parse_bearer",
]


TOKEN_PREFIX = "aio_"
"""Every token the server issues starts with this, so that leaked tokens are easy to spot."""

ADMIN_PRINCIPAL = "admin"


READ_SCOPE = "read"
"""The scope of a token that may only read."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: the owner of the token (or the user of the Basic credentials) that
    authenticated the request."""

    name: str
    is_admin: bool
    token_id: str
    """The authenticating token's id; empty for Basic credentials (a username and password)."""
    expires_at: datetime | None = None
    """When the authenticating token expires (``None``: never, or Basic credentials)."""
    scope: str | None = None
    """``None``: everything ``name`` may do; ``"read"``: reads only."""
    session_id: str | None = None
    """The login session of an access token; ``None`` for an API or admin token."""
    session_expires_at: datetime | None = None
    """For an access token of a session: when the session ends (never later than the API token
    a token login opened it with); ``None`` otherwise."""

    @property
    def read_only(self) -> bool:
        """Whether the principal may only read, whatever its roles allow."""
        return self.scope == READ_SCOPE

    @property
    def mint_limit(self) -> datetime | None:
        """The latest expiry of a token this principal creates (``None``: no limit). A token
        never outlives the credential it is made with: an API token's expiry; a session's access
        token stands for its session (which may be refreshed until it ends, but not past that):
        the session's end."""
        if self.session_id is not None:
            return self.session_expires_at or self.expires_at
        return self.expires_at


ANONYMOUS = Principal(name="~anonymous", is_admin=False, token_id="")
"""Who asks without credentials where that is allowed: ``GET /api/v1/`` (where the gRPC endpoint
is) and a channel token holder's gRPC calls, whose request carries its own credential. Its
idempotency keys are this principal's; ``~`` keeps it apart from every username."""


def generate_token() -> str:
    """A new random token secret."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    """The stored form of a token secret.

    Tokens are 256-bit random values, so one round of SHA-256 is enough: there is nothing to
    brute-force, and lookups by hash stay a single indexed query.
    """
    # (any text hashes, lone surrogates included: it is only ever looked up, never decoded)
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or ``None``."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials


def parse_basic(authorization: str | None) -> tuple[str, str] | None:
    """The username and password of an ``Authorization: Basic <base64(user:password)>`` value,
    or ``None`` if it is not one (RFC 7617; UTF-8)."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # (non-ASCII base64 raises a plain ValueError)
        return None
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        return None
    return username, password


@dataclass(frozen=True)
class AdminTokenState:
    """What a start found, or did, about admin tokens (for the server to tell its operator)."""

    secret: str | None = field(repr=False)
    """The plaintext to show: a token this start generated, or the one it was given."""
    created: bool
    """Whether this start stored a new admin token (generated or given)."""
    others: int
    """How many other usable admin tokens there are."""


async def ensure_admin_token(
    sessions: async_sessionmaker[AsyncSession], secret: str | None
) -> AdminTokenState:
    """Make sure an admin token exists.

    With ``secret`` given, store its hash unless already stored. Without, generate and store
    one if no usable admin token exists yet (the only time its plaintext is available).
    """
    async with sessions() as session:
        if secret is not None:
            existing = await session.scalar(
                select(Token).where(Token.secret_hash == hash_token(secret))
            )
            if existing is not None:
                if not existing.is_admin or existing.revoked_at is not None:
                    logger.warning("The configured admin token is revoked or not an admin token")
                others = await _usable_admin_tokens(session, besides=existing.id)
                return AdminTokenState(secret, created=False, others=others)
        others = await _usable_admin_tokens(session)
        if secret is None and others:
            return AdminTokenState(None, created=False, others=others)
        secret = secret or generate_token()
        session.add(_admin_token(secret))
        try:
            await session.commit()
        except IntegrityError:  # another server on the same database stored it first
            await session.rollback()
            return AdminTokenState(secret, created=False, others=others)
        return AdminTokenState(secret, created=True, others=others)


async def mint_admin_token(work: UnitOfWork, *, revoke_others: bool) -> tuple[str, list[str]]:
    """A new admin token (its plaintext, shown once) and the ids of the admin tokens revoked
    with it (every usable one if ``revoke_others``: a rotation), written in ``work``; the
    caller announces the revocations and commits."""
    secret = generate_token()
    now = utcnow()
    revoked: list[str] = []
    if revoke_others:
        revoked = list(await work.session.scalars(select(Token.id).where(_usable_admin(now))))
        await work.session.execute(
            update(Token).where(Token.id.in_(revoked)).values(revoked_at=now)
        )
    work.session.add(_admin_token(secret))
    await work.session.flush()
    return secret, revoked


def _admin_token(secret: str) -> Token:
    return Token(
        label="admin", secret_hash=hash_token(secret), owner=ADMIN_PRINCIPAL, is_admin=True
    )


def _usable_admin(now: datetime) -> ColumnElement[bool]:
    return and_(
        Token.is_admin.is_(True),
        Token.revoked_at.is_(None),
        or_(Token.expires_at.is_(None), Token.expires_at > now),
    )


async def _usable_admin_tokens(session: AsyncSession, *, besides: str | None = None) -> int:
    query = select(func.count()).select_from(Token).where(_usable_admin(utcnow()))
    if besides is not None:
        query = query.where(Token.id != besides)
    return int(await session.scalar(query) or 0)
