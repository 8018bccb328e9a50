"""Users: who the client is (``GET /user``), and the namespace it charges by default."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .._core.context import ClientContext

__all__ = [
    "Action",
    "OrganizationMembership",
    "User",
    "find_organization_or_user_for_default_charges",
    "user_profile",
]

Action = Literal["read", "write", "admin"]
"""What a principal may do in a namespace."""

_ACTIONS = ("read", "write", "admin")


@dataclass(frozen=True)
class OrganizationMembership:
    """An organization a user belongs to: the user's role there and what it allows."""

    name: str
    display_name: str | None
    role: str
    allowed_actions: tuple[str, ...]

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> OrganizationMembership:
        return cls(
            name=str(data["name"]),
            display_name=_optional_str(data.get("display_name")),
            role=str(data["role"]),
            allowed_actions=tuple(str(action) for action in data.get("allowed_actions", ())),
        )


@dataclass(frozen=True)
class User:
    """A user account.

    From :meth:`~aiosdk.AsyncClient.user_profile`, ``organizations`` lists the user's
    memberships (sorted by name); an admin's listings (:attr:`~aiosdk.AsyncClient.admin`) leave
    it empty and say whether the account is ``disabled``. ``is_admin`` is true for the admin
    token's principal only.
    """

    id: str | None
    username: str
    email: str | None
    display_name: str | None
    created_at: datetime | None
    disabled: bool = False
    is_admin: bool = False
    organizations: tuple[OrganizationMembership, ...] = ()

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> User:
        created = data.get("created_at")
        return cls(
            id=_optional_str(data.get("id")),
            username=str(data["username"]),
            email=_optional_str(data.get("email")),
            display_name=_optional_str(data.get("display_name")),
            created_at=datetime.fromisoformat(created) if created else None,
            disabled=bool(data.get("disabled", False)),
            is_admin=bool(data.get("is_admin", False)),
            organizations=tuple(
                OrganizationMembership._from_json(item) for item in data.get("organizations", ())
            ),
        )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


async def user_profile(ctx: ClientContext) -> User:
    """The authenticated user's profile and organizations (``GET /user``)."""
    return await ctx.fetch("GET", "/user", User._from_json)


async def default_user(ctx: ClientContext) -> User:
    """The profile, fetched once per identity (until the next login or logout)."""
    cache = ctx.transport.auth.cache
    found = cache.get("user")
    if isinstance(found, User):
        return found
    user = await user_profile(ctx)
    cache["user"] = user
    return user


def find_organization_or_user_for_default_charges(
    user: User, required_action: Action | str | None = None
) -> str:
    """The namespace to charge: the first of ``user``'s organizations (by name) whose allowed
    actions include ``required_action`` (any organization if ``None``), else the user's own."""
    if required_action is not None and required_action not in _ACTIONS:
        raise ValueError(
            f"required_action must be one of {', '.join(map(repr, _ACTIONS))} or None,"
            f" not {required_action!r}"
        )
    for membership in sorted(user.organizations, key=lambda m: m.name):
        if required_action is None or required_action in membership.allowed_actions:
            return membership.name
    return user.username
