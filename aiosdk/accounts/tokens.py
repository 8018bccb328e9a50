"""API tokens: create (the secret is shown once), list, look up, revoke."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .._core.context import ClientContext
from .._core.paging import AsyncPager, Page
from .._core.secrets import Secret

__all__ = ["AsyncTokens", "NewToken", "TokenInfo"]


@dataclass(frozen=True)
class TokenInfo:
    """An API token as the server lists it (never its secret)."""

    id: str
    label: str
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> TokenInfo:
        expires = data.get("expires_at")
        return cls(
            id=data["id"],
            label=data["label"],
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )


@dataclass(frozen=True)
class NewToken(TokenInfo):
    """A token just created; ``secret`` is its only copy (the server keeps a hash)."""

    secret: Secret


class AsyncTokens:
    """The API tokens of the principal the client authenticates as (all of them, for an admin)."""

    def __init__(self, ctx: ClientContext) -> None:
        self._ctx = ctx

    async def create(self, label: str, *, expires_in: int | None = None) -> NewToken:
        """Create a token; ``expires_in`` seconds from now, or never."""
        response = await self._ctx.request(
            "POST", "/tokens", json={"label": label, "expires_in": expires_in}
        )
        data = response.json()
        info = TokenInfo._from_json(data)
        return NewToken(**vars(info), secret=Secret(data["token"]))

    def list(self, *, page_size: int = 100) -> AsyncPager[TokenInfo]:
        """Every token, ``page_size`` per request."""

        async def fetch(cursor: str | None) -> Page[TokenInfo]:
            params: dict[str, Any] = {"page_size": page_size}
            if cursor:
                params["page_token"] = cursor
            data = (await self._ctx.request("GET", "/tokens", params=params)).json()
            items = [TokenInfo._from_json(item) for item in data["items"]]
            return Page(items=items, next_page_token=data.get("next_page_token"))

        return AsyncPager(fetch)

    async def get(self, token_id: str) -> TokenInfo:
        """One token by id; :class:`~aiosdk.NotFoundError` if there is none."""
        return TokenInfo._from_json(
            (await self._ctx.request("GET", f"/tokens/{quote(token_id, safe='')}")).json()
        )

    async def revoke(self, token_id: str) -> None:
        """Revoke a token; it stops authenticating at once."""
        await self._ctx.request("DELETE", f"/tokens/{quote(token_id, safe='')}")
