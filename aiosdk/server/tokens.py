"""API tokens: the rules, shared by ``/api/v1/tokens`` and the gRPC ``TokenService``.

Who sees which token, who may mint one for whom, how long it lives, and what revoking does.
Writes go through the request's unit of work, which commits them (and the idempotency record)
before the answer is sent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from .accounts.sessions import end_sessions_opened_with
from .auth import READ_SCOPE, Principal, generate_token, hash_token
from .authenticator import Authenticator
from .errors import NotFoundError, PermissionDeniedError
from .storage import Token, utcnow
from .unit_of_work import UnitOfWork
from .validation import Text

__all__ = ["MAX_EXPIRES_IN", "TokenCreate", "create_token", "get_visible", "revoke_token"]

MAX_EXPIRES_IN = 10 * 365 * 24 * 3600
"""The longest lifetime a token may be given, in seconds."""


class TokenCreate(BaseModel):
    """A request for a new token.

    A token never outlives the token that creates it: when the caller's token expires, the new
    token's expiry is capped at the same instant (a longer ``expires_in``, or none, is clamped
    rather than refused; the response's ``expires_at`` tells the outcome). A short-lived or
    leaked token therefore cannot mint a longer-lived one. A session's access token counts as
    its session: what it creates expires no later than the session (not its access token's
    own, short, expiry: the session is refreshed past that, but never past its end).
    """

    model_config = ConfigDict(extra="forbid")

    label: Text = Field(min_length=1, max_length=100)
    expires_in: int | None = Field(
        default=None,
        strict=True,  # a JSON number: not true (1 second), "60" or 60.0
        gt=0,
        le=MAX_EXPIRES_IN,
        description=(
            "Lifetime in seconds; null: forever. Capped at the expiry of the token making the"
            " request, if it has one (for a login session's access token: the session's end)."
        ),
    )
    owner: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._@-]+$",
        description="The principal the token is for; only an admin may name another one.",
    )
    scope: Literal["read"] | None = Field(
        default=None,
        description=(
            'null: everything its owner may do; "read": reads only. A read-only caller may only'
            " create read-only tokens."
        ),
    )


def visible_tokens(principal: Principal) -> Select[Token]:
    """The live API tokens ``principal`` may see: its own, or every one for an admin (the
    access tokens of login sessions are not listed: logging out ends them)."""
    query = select(Token).where(Token.revoked_at.is_(None), Token.session_id.is_(None))
    if not principal.is_admin:
        query = query.where(Token.owner == principal.name)
    return query


async def get_visible(session: AsyncSession, principal: Principal, token_id: str) -> Token:
    """One token ``principal`` may see; :class:`NotFoundError` otherwise."""
    token = await session.scalar(visible_tokens(principal).where(Token.id == token_id))
    if token is None:
        raise NotFoundError(f"Token {token_id!r} not found")
    return token


async def create_token(
    session: AsyncSession, principal: Principal, request: TokenCreate
) -> tuple[Token, str]:
    """Mint a token for the caller (or, for an admin, for ``request.owner``); returns the stored
    token and its secret, the only copy there will ever be. Its expiry is capped at
    ``principal.mint_limit`` (see :class:`TokenCreate`)."""
    owner = request.owner or principal.name
    if owner != principal.name and not principal.is_admin:
        raise PermissionDeniedError("Only an admin may create tokens for another principal")
    if principal.read_only and request.scope != READ_SCOPE:
        raise PermissionDeniedError('A read-only token may only create tokens of scope "read"')
    secret = generate_token()
    now = utcnow()
    expires_at = None if request.expires_in is None else now + timedelta(seconds=request.expires_in)
    limit = principal.mint_limit
    if limit is not None and (expires_at is None or expires_at > limit):
        expires_at = limit
    token = Token(
        label=request.label,
        secret_hash=hash_token(secret),
        owner=owner,
        is_admin=principal.is_admin and owner == principal.name,
        scope=request.scope,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    return token, secret


async def revoke_token(
    work: UnitOfWork, authenticator: Authenticator, principal: Principal, token_id: str
) -> None:
    """Revoke a token ``principal`` may see: it stops authenticating once ``work`` commits, and
    so do the login sessions opened with it."""
    token = await get_visible(work.session, principal, token_id)
    token.revoked_at = utcnow()
    await work.session.flush()
    authenticator.revoked(work, token.id)
    await end_sessions_opened_with(work, authenticator, token.id)
