"""Bearer tokens: generation, hashing and authentication, shared by HTTP and gRPC."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .storage import Token, utcnow

__all__ = [
    "ADMIN_PRINCIPAL",
    "TOKEN_PREFIX",
    "Principal",
    "authenticate",
    "ensure_admin_token",
    "generate_token",
    "hash_token",
    "parse_bearer",
]

logger = logging.getLogger("aiosdk.server")

TOKEN_PREFIX = "aio_"
"""Every token the server issues starts with this, so that leaked tokens are easy to spot."""

ADMIN_PRINCIPAL = "admin"

_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is asking: the owner of the token that authenticated the request."""

    name: str
    is_admin: bool
    token_id: str
    expires_at: datetime | None = None
    """When the authenticating token expires; tokens it creates expire no later."""


def generate_token() -> str:
    """A new random token secret."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    """The stored form of a token secret.

    Tokens are 256-bit random values, so one round of SHA-256 is enough: there is nothing to
    brute-force, and lookups by hash stay a single indexed query.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def parse_bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or ``None``."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials


async def authenticate(sessions: async_sessionmaker[AsyncSession], secret: str) -> Principal | None:
    """The principal owning ``secret``, or ``None`` if it is unknown, revoked or expired."""
    now = utcnow()
    async with sessions() as session:
        token = await session.scalar(select(Token).where(Token.secret_hash == hash_token(secret)))
        if token is None or token.revoked_at is not None:
            return None
        if token.expires_at is not None and token.expires_at <= now:
            return None
        if token.last_used_at is None or token.last_used_at < now - _LAST_USED_RESOLUTION:
            await session.execute(
                update(Token)
                .where(Token.id == token.id)
                .where(
                    or_(
                        Token.last_used_at.is_(None),
                        Token.last_used_at < now - _LAST_USED_RESOLUTION,
                    )
                )
                .values(last_used_at=now)
            )
            await session.commit()
        return Principal(
            name=token.owner,
            is_admin=token.is_admin,
            token_id=token.id,
            expires_at=token.expires_at,
        )


async def ensure_admin_token(
    sessions: async_sessionmaker[AsyncSession], secret: str | None
) -> str | None:
    """Make sure an admin token exists and return a secret to show, if there is one.

    With ``secret`` given, store its hash unless already stored, and return it. Without,
    generate and store one if no usable admin token exists yet and return it (the only time the
    plaintext is available); return ``None`` if one already exists.
    """
    now = utcnow()
    async with sessions() as session:
        if secret is not None:
            existing = await session.scalar(
                select(Token).where(Token.secret_hash == hash_token(secret))
            )
            if existing is not None:
                if not existing.is_admin or existing.revoked_at is not None:
                    logger.warning("The configured admin token is revoked or not an admin token")
                return secret
        else:
            usable = await session.scalar(
                select(Token.id)
                .where(Token.is_admin.is_(True), Token.revoked_at.is_(None))
                .where(or_(Token.expires_at.is_(None), Token.expires_at > now))
                .limit(1)
            )
            if usable is not None:
                return None
            secret = generate_token()
        session.add(
            Token(
                label="admin",
                secret_hash=hash_token(secret),
                owner=ADMIN_PRINCIPAL,
                is_admin=True,
            )
        )
        try:
            await session.commit()
        except IntegrityError:  # another server on the same database stored it first
            await session.rollback()
        return secret
