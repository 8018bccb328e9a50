"""``/api/v1/tokens``: bearer tokens of the calling principal (or of everyone, for an admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from ... import tokens
from ...auth import READ_SCOPE
from ...config import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from ...paging import keyset_page
from ...storage import Token
from ...tokens import TokenCreate
from ..dependencies import Current
from ..openapi import documented_error
from ..pagination import decode_page_token, encode_page_token

__all__ = ["router"]

router = APIRouter(prefix="/tokens", tags=["tokens"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: documented_error("No such token, or not one the caller may see")
}


class TokenInfo(BaseModel):
    """A token, without its secret."""

    id: str
    label: str
    owner: str
    created_at: datetime
    expires_at: datetime | None
    scope: Literal["read"] | None = Field(
        description='null: everything its owner may do; "read": reads only'
    )

    @classmethod
    def of(cls, token: Token) -> TokenInfo:
        """The public view of a stored token."""
        return cls(
            id=token.id,
            label=token.label,
            owner=token.owner,
            created_at=token.created_at,
            expires_at=token.expires_at,
            scope="read" if token.scope == READ_SCOPE else None,
        )


class CreatedToken(TokenInfo):
    """A new token, with its secret: shown once, never again."""

    token: str


class TokenPage(BaseModel):
    """A page of tokens; ``next_page_token`` is null on the last page."""

    items: list[TokenInfo]
    next_page_token: str | None


@router.post(
    "",
    status_code=201,
    summary="Create a token",
    responses={
        403: documented_error(
            "Only an admin may create tokens for another principal; a read-only token may only"
            " create read-only tokens (and may not make this request at all)"
        )
    },
)
async def create_token(body: TokenCreate, call: Current) -> CreatedToken:
    """Create a token for the caller (or, for an admin, for ``owner``).

    It expires no later than the token making the request; made with a login session's
    access token, no later than the session.
    """
    token, secret = await tokens.create_token(call.session, call.principal, body)
    return CreatedToken(**TokenInfo.of(token).model_dump(), token=secret)


@router.get("", summary="List API tokens")
async def list_tokens(
    call: Current,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[str | None, Query()] = None,
) -> TokenPage:
    """The caller's API tokens (an admin sees every one), oldest first; the access tokens of
    login sessions are not listed."""
    after = None if page_token is None else decode_page_token(page_token)
    found, end = await keyset_page(
        call.session, tokens.visible_tokens(call.principal), Token, page_size, after
    )
    return TokenPage(
        items=[TokenInfo.of(t) for t in found],
        next_page_token=None if end is None else encode_page_token(*end),
    )


@router.get("/{token_id}", summary="Get a token", responses=_NOT_FOUND)
async def get_token(token_id: str, call: Current) -> TokenInfo:
    """One token, without its secret."""
    return TokenInfo.of(await tokens.get_visible(call.session, call.principal, token_id))


@router.delete("/{token_id}", status_code=204, summary="Revoke a token", responses=_NOT_FOUND)
async def revoke_token(token_id: str, call: Current) -> Response:
    """Revoke a token: it stops authenticating at once."""
    await tokens.revoke_token(call.work, call.state.authenticator, call.principal, token_id)
    return Response(status_code=204)
