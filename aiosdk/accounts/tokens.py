"""API tokens: create (the secret is shown once), list, look up, revoke."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .._core.context import ClientContext
from .._core.paging import AsyncPager, Page
from .._core.paths import segment
from .._core.secrets import Secret

__all__ = ["AsyncTokens", "NewToken", "Scope", "TokenInfo"]

Scope = Literal["read"]
"""A token's scope: ``"read"`` allows reads only; no scope (``None``) allows all its owner may."""


@dataclass(frozen=True)
class TokenInfo:
    """An API token as the server lists it (never its secret); ``scope`` is ``"read"`` for a
    read-only token, ``None`` for one that may do all its owner may."""

    id: str
    label: str
    owner: str
    created_at: datetime
    expires_at: datetime | None
    scope: str | None

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> TokenInfo:
        return cls(**_info_fields(data))


@dataclass(frozen=True)
class NewToken(TokenInfo):
    """A token just created; ``secret`` is its only copy (the server keeps a hash)."""

    secret: Secret

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> NewToken:
        return cls(**_info_fields(data), secret=Secret(data["token"]))


def _info_fields(data: dict[str, Any]) -> dict[str, Any]:
    expires = data.get("expires_at")
    return {
        "id": str(data["id"]),
        "label": str(data["label"]),
        "owner": str(data["owner"]),
        "created_at": datetime.fromisoformat(data["created_at"]),
        "expires_at": datetime.fromisoformat(expires) if expires else None,
        "scope": None if data.get("scope") is None else str(data["scope"]),
    }


def _page(data: dict[str, Any]) -> Page[TokenInfo]:
    items = [TokenInfo._from_json(item) for item in data["items"]]
    return Page(items=items, next_page_token=data.get("next_page_token"))


class AsyncTokens:
    """The API tokens of the principal the client authenticates as (all of them, for an admin);
    a login session's own access tokens are not listed."""

    def __init__(self, ctx: ClientContext) -> None:
        self._ctx = ctx

    async def create(
        self, label: str, *, expires_in: int | None = None, scope: Scope | None = None
    ) -> NewToken:
        """Create a token; ``expires_in`` seconds from now, or never; ``scope="read"`` for a
        read-only one (a read-only caller can only create read-only tokens).

        It never outlives the credentials creating it (a login session's token counts as its
        session): a longer ``expires_in`` is clamped, as ``expires_at`` shows.
        """
        body = {"label": label, "expires_in": expires_in, "scope": scope}
        return await self._ctx.fetch("POST", "/tokens", NewToken._from_json, json=body)

    def list(self, *, page_size: int = 100) -> AsyncPager[TokenInfo]:
        """Every token, ``page_size`` per request."""

        async def fetch(cursor: str | None) -> Page[TokenInfo]:
            params: dict[str, Any] = {"page_size": page_size}
            if cursor:
                params["page_token"] = cursor
            return await self._ctx.fetch("GET", "/tokens", _page, params=params)

        return AsyncPager(fetch)

    async def get(self, token_id: str) -> TokenInfo:
        """One token by id; :class:`~aiosdk.NotFoundError` if there is none."""
        path = f"/tokens/{segment(token_id, what='token id')}"
        return await self._ctx.fetch("GET", path, TokenInfo._from_json)

    async def revoke(self, token_id: str) -> None:
        """Revoke a token; it stops authenticating at once."""
        await self._ctx.request("DELETE", f"/tokens/{segment(token_id, what='token id')}")
