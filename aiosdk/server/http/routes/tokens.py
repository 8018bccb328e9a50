"""``/api/v1/tokens``: bearer tokens of the calling principal (or of everyone, for an admin)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, and_, or_, select

from ...auth import Principal, generate_token, hash_token
from ...config import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from ...storage import Token, utcnow
from ..authentication import CurrentPrincipal
from ..dependencies import Session
from ..errors import NotFoundError, PermissionDeniedError
from ..pagination import decode_page_token, encode_page_token
from ..validation import Text

__all__ = ["router"]

router = APIRouter(prefix="/tokens", tags=["tokens"])

_MAX_EXPIRES_IN = 10 * 365 * 24 * 3600


class TokenCreate(BaseModel):
    """A request for a new token.

    A token never outlives the token that creates it: when the caller's token expires, the new
    token's expiry is capped at the same instant (a longer ``expires_in``, or none, is clamped
    rather than refused; the response's ``expires_at`` tells the outcome). A short-lived or
    leaked token therefore cannot mint a longer-lived one.
    """

    model_config = ConfigDict(extra="forbid")

    label: Text = Field(min_length=1, max_length=100)
    expires_in: int | None = Field(
        default=None,
        strict=True,  # a JSON number: not true (1 second), "60" or 60.0
        gt=0,
        le=_MAX_EXPIRES_IN,
        description=(
            "Lifetime in seconds; null: forever. Capped at the expiry of the token making the"
            " request, if it has one."
        ),
    )
    owner: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._@-]+$",
        description="The principal the token is for; only an admin may name another one.",
    )


class TokenInfo(BaseModel):
    """A token, without its secret."""

    id: str
    label: str
    owner: str
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def of(cls, token: Token) -> TokenInfo:
        """The public view of a stored token."""
        return cls(
            id=token.id,
            label=token.label,
            owner=token.owner,
            created_at=token.created_at,
            expires_at=token.expires_at,
        )


class CreatedToken(TokenInfo):
    """A new token, with its secret: shown once, never again."""

    token: str


class TokenPage(BaseModel):
    """A page of tokens; ``next_page_token`` is null on the last page."""

    items: list[TokenInfo]
    next_page_token: str | None


def _visible_tokens(principal: Principal) -> Select[Token]:
    query = select(Token).where(Token.revoked_at.is_(None))
    if not principal.is_admin:
        query = query.where(Token.owner == principal.name)
    return query


async def _get_visible(session: Session, principal: Principal, token_id: str) -> Token:
    token = await session.scalar(_visible_tokens(principal).where(Token.id == token_id))
    if token is None:
        raise NotFoundError(f"Token {token_id!r} not found")
    return token


@router.post("", status_code=201, summary="Create a token")
async def create_token(
    body: TokenCreate, session: Session, principal: CurrentPrincipal
) -> CreatedToken:
    """Create a token for the caller (or, for an admin, for ``owner``).

    It expires no later than the token making the request.
    """
    owner = body.owner or principal.name
    if owner != principal.name and not principal.is_admin:
        raise PermissionDeniedError("Only an admin may create tokens for another principal")
    secret = generate_token()
    now = utcnow()
    expires_at = None if body.expires_in is None else now + timedelta(seconds=body.expires_in)
    if principal.expires_at is not None and (
        expires_at is None or expires_at > principal.expires_at
    ):
        expires_at = principal.expires_at
    token = Token(
        label=body.label,
        secret_hash=hash_token(secret),
        owner=owner,
        is_admin=principal.is_admin and owner == principal.name,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(token)
    await session.commit()
    return CreatedToken(**TokenInfo.of(token).model_dump(), token=secret)


@router.get("", summary="List tokens")
async def list_tokens(
    session: Session,
    principal: CurrentPrincipal,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[str | None, Query()] = None,
) -> TokenPage:
    """The caller's tokens (an admin sees every token), oldest first."""
    query = _visible_tokens(principal)
    if page_token is not None:
        created_at, token_id = decode_page_token(page_token)
        query = query.where(
            or_(
                Token.created_at > created_at,
                and_(Token.created_at == created_at, Token.id > token_id),
            )
        )
    query = query.order_by(Token.created_at, Token.id).limit(page_size + 1)
    tokens = list(await session.scalars(query))
    next_page_token = None
    if len(tokens) > page_size:
        tokens = tokens[:page_size]
        next_page_token = encode_page_token(tokens[-1].created_at, tokens[-1].id)
    return TokenPage(items=[TokenInfo.of(t) for t in tokens], next_page_token=next_page_token)


@router.get("/{token_id}", summary="Get a token")
async def get_token(token_id: str, session: Session, principal: CurrentPrincipal) -> TokenInfo:
    """One token, without its secret."""
    return TokenInfo.of(await _get_visible(session, principal, token_id))


@router.delete("/{token_id}", status_code=204, summary="Revoke a token")
async def revoke_token(token_id: str, session: Session, principal: CurrentPrincipal) -> Response:
    """Revoke a token: it stops authenticating at once."""
    token = await _get_visible(session, principal, token_id)
    token.revoked_at = utcnow()
    await session.commit()
    return Response(status_code=204)
