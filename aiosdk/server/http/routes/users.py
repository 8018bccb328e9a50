"""``/api/v1/user``: The calling user's profile."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from ...accounts import users
from ...accounts.organizations import RoleName
from ...authorization import ROLE_ACTIONS, cap, ordered
from ...errors import NotFoundError
from ..dependencies import Current
from ..openapi import documented_error
from .organizations import Action

__all__ = ["OrganizationMembership", "UserProfile", "router"]

router = APIRouter(prefix="/user", tags=["users"])


class OrganizationMembership(BaseModel):
    """An organization the caller belongs to, its role there and what it may do there."""

    name: str
    display_name: str | None
    role: RoleName
    allowed_actions: list[Action]


class UserProfile(BaseModel):
    """Who the caller is. The admin token is no user: ``is_admin`` true, ``username``
    ``"admin"``, ``id`` and ``created_at`` null, and no organizations."""

    id: str | None
    username: str
    email: str | None
    display_name: str | None
    created_at: datetime | None
    is_admin: bool
    organizations: list[OrganizationMembership]
    """By name."""


@router.get(
    "",
    summary="The caller's profile",
    responses={404: documented_error("The token's owner is no user (or a disabled one)")},
)
async def get_profile(call: Current) -> UserProfile:
    """The calling user, and the organizations it belongs to."""
    principal = call.principal
    if principal.is_admin:
        return UserProfile(
            id=None,
            username=principal.name,
            email=None,
            display_name=None,
            created_at=None,
            is_admin=True,
            organizations=[],
        )
    user = await users.user_of(call.session, principal)
    if user is None:
        raise NotFoundError(f"No user {principal.name!r}")
    memberships = await users.memberships_of(call.session, user)
    return UserProfile(
        id=user.id,
        username=user.username,
        email=user.email,
        display_name=user.display_name,
        created_at=user.created_at,
        is_admin=False,
        organizations=[
            OrganizationMembership(
                name=m.organization.name,
                display_name=m.organization.display_name,
                role=m.role,  # type: ignore[arg-type]  # a role, as stored
                allowed_actions=ordered(cap(principal, ROLE_ACTIONS[m.role])),  # type: ignore[arg-type]
            )
            for m in memberships
        ],
    )
