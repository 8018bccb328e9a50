"""Organizations: the ones a user belongs to, their members and roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .._core.context import ClientContext
from .._core.paging import AsyncPager, Page
from .._core.paths import segment

__all__ = ["Member", "Organization", "Role", "organization", "organizations"]

Role = Literal["owner", "admin", "member", "read_only"]
"""A member's role: owners and admins manage the organization, members read and write,
read-only members read."""


@dataclass(frozen=True)
class Member:
    """A member of an organization and their role."""

    username: str
    role: str

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> Member:
        return cls(username=str(data["username"]), role=str(data["role"]))


@dataclass(frozen=True)
class Organization:
    """An organization: a namespace that its members share.

    ``role`` is the caller's role in it (``None`` for the admin token), ``allowed_actions``
    what the caller may do there, ``members`` every member (sorted by username).
    """

    id: str
    name: str
    display_name: str | None
    created_at: datetime | None
    role: str | None
    allowed_actions: tuple[str, ...]
    members: tuple[Member, ...]

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> Organization:
        created = data.get("created_at")
        display = data.get("display_name")
        role = data.get("role")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            display_name=None if display is None else str(display),
            created_at=datetime.fromisoformat(created) if created else None,
            role=None if role is None else str(role),
            allowed_actions=tuple(str(action) for action in data.get("allowed_actions", ())),
            members=tuple(Member._from_json(item) for item in data.get("members", ())),
        )


def _page(data: dict[str, Any]) -> Page[Organization]:
    items = [Organization._from_json(item) for item in data["items"]]
    return Page(items=items, next_page_token=data.get("next_page_token"))


async def organization(ctx: ClientContext, name: str) -> Organization:
    """One organization (``GET /organizations/{name}``)."""
    path = f"/organizations/{segment(name, what='organization name')}"
    return await ctx.fetch("GET", path, Organization._from_json)


def organization_pager(ctx: ClientContext, *, page_size: int = 100) -> AsyncPager[Organization]:
    """The caller's organizations (every one, for the admin token), page by page."""

    async def fetch(cursor: str | None) -> Page[Organization]:
        params: dict[str, Any] = {"page_size": page_size}
        if cursor:
            params["page_token"] = cursor
        return await ctx.fetch("GET", "/organizations", _page, params=params)

    return AsyncPager(fetch)


async def organizations(ctx: ClientContext) -> list[Organization]:
    """Every organization of the caller, across pages."""
    return [org async for org in organization_pager(ctx)]
