"""``/api/v1/admin``: Server administration: users and organizations (admin token only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from ...accounts import organizations, users
from ...accounts.models import User as UserRow
from ...accounts.organizations import OrganizationCreate
from ...accounts.users import UserCreate, UserUpdate
from ...auth import Principal
from ...authorization import READ, WRITE, require_admin
from ...config import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from ..authentication import READ_METHODS
from ..dependencies import Current
from ..openapi import documented_error
from ..pagination import decode_page_token, encode_page_token
from .organizations import Organization, conflict

__all__ = ["User", "UserPage", "router"]


async def _admin_only(request: Request) -> None:
    """Refuse (403) anyone but the admin token, before the request is looked at further; a
    read-scoped admin token only reads."""
    principal: Principal = request.state.principal
    require_admin(principal, READ if request.method in READ_METHODS else WRITE)


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(_admin_only)],
    responses={
        403: documented_error(
            "Only the admin token may administer the server (and not a read-only one, for changes)"
        )
    },
)

_USER_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: documented_error("No such user")}


class User(BaseModel):
    """A user, as the admin sees it (never its password)."""

    id: str
    username: str
    email: str | None
    display_name: str | None
    created_at: datetime
    disabled: bool

    @classmethod
    def of(cls, user: UserRow) -> User:
        """The answer for a stored user."""
        return cls(
            id=user.id,
            username=user.username,
            email=user.email,
            display_name=user.display_name,
            created_at=user.created_at,
            disabled=user.disabled_at is not None,
        )


class UserPage(BaseModel):
    """A page of users; ``next_page_token`` is null on the last page."""

    items: list[User]
    next_page_token: str | None


@router.post(
    "/users",
    status_code=201,
    summary="Create a user",
    responses={
        409: conflict("The name is reserved or taken (by a user or an organization)"),
    },
)
async def create_user(body: UserCreate, call: Current) -> User:
    """Create a user (and its namespace). Without a password it can only use API tokens."""
    return User.of(await users.create_user(call.work, call.state.callers, body))


@router.get("/users", summary="List users")
async def list_users(
    call: Current,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[str | None, Query()] = None,
) -> UserPage:
    """Every user, disabled ones included, oldest first."""
    after = None if page_token is None else decode_page_token(page_token)
    found, position = await users.list_users(call.session, page_size, after)
    return UserPage(
        items=[User.of(user) for user in found],
        next_page_token=None if position is None else encode_page_token(*position),
    )


@router.get("/users/{username}", summary="Get a user", responses=_USER_NOT_FOUND)
async def get_user(username: str, call: Current) -> User:
    """One user."""
    return User.of(await users.get_user(call.session, username))


@router.patch("/users/{username}", summary="Update a user", responses=_USER_NOT_FOUND)
async def update_user(username: str, body: UserUpdate, call: Current) -> User:
    """Change a user's e-mail, display name or password, or disable it (which revokes its API
    tokens and login sessions at once) or enable it again."""
    state = call.state
    user = await users.update_user(call.work, state.authenticator, state.callers, username, body)
    return User.of(user)


@router.post(
    "/organizations",
    status_code=201,
    summary="Create an organization",
    responses={
        404: documented_error("The owner is no user"),
        409: conflict("The name is reserved or taken (by a user or an organization)"),
    },
)
async def create_organization(body: OrganizationCreate, call: Current) -> Organization:
    """Create an organization (and its namespace) with ``owner`` as its first member, an owner."""
    view = await organizations.create_organization(call.work, call.state.callers, body)
    return Organization.of(view)
