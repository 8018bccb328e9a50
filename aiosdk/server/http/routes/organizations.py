"""``/api/v1/organizations``: Organizations the caller belongs to, and their members."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from ...accounts import organizations
from ...accounts.organizations import MemberCreate, MemberUpdate, OrganizationView, RoleName
from ...authorization import ordered
from ...config import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from ..dependencies import Current
from ..openapi import RETRY_AFTER, documented_error
from ..pagination import decode_page_token, encode_page_token

__all__ = ["Action", "Member", "Organization", "OrganizationPage", "conflict", "router"]

router = APIRouter(prefix="/organizations", tags=["organizations"])

Action = Literal["read", "write", "admin"]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: documented_error("No such organization, or the caller is not a member of it")
}


def conflict(description: str) -> dict[str, Any]:
    """The ``responses=`` entry of a mutating route's 409: ``description``, or (as for every
    mutating route) a request with the same Idempotency-Key still in progress."""
    return documented_error(
        f"{description}; or a request with the same Idempotency-Key is still in progress"
        " (error type idempotency_in_progress: retry after Retry-After)",
        {"Retry-After": RETRY_AFTER},
    )


class Member(BaseModel):
    """A member of an organization and its role."""

    username: str
    role: RoleName


class Organization(BaseModel):
    """An organization as the caller sees it: its role and what it may do there (read, write,
    admin: managing members), and the members."""

    id: str
    name: str
    display_name: str | None
    created_at: datetime
    role: RoleName | None
    """The caller's role; null for the admin token."""
    allowed_actions: list[Action]
    members: list[Member]

    @classmethod
    def of(cls, view: OrganizationView) -> Organization:
        """The answer for ``view``."""
        organization = view.organization
        return cls(
            id=organization.id,
            name=organization.name,
            display_name=organization.display_name,
            created_at=organization.created_at,
            role=view.role,  # type: ignore[arg-type]  # a role, as stored
            allowed_actions=ordered(view.allowed_actions),  # type: ignore[arg-type]
            members=[Member(username=u, role=r) for u, r in view.members],  # type: ignore[arg-type]
        )


class OrganizationPage(BaseModel):
    """A page of organizations; ``next_page_token`` is null on the last page."""

    items: list[Organization]
    next_page_token: str | None


@router.get("", summary="List organizations")
async def list_organizations(
    call: Current,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[str | None, Query()] = None,
) -> OrganizationPage:
    """The organizations the caller belongs to (the admin token: every one), oldest first."""
    after = None if page_token is None else decode_page_token(page_token)
    views, position = await organizations.list_visible(
        call.session, call.principal, page_size, after
    )
    return OrganizationPage(
        items=[Organization.of(view) for view in views],
        next_page_token=None if position is None else encode_page_token(*position),
    )


@router.get("/{name}", summary="Get an organization", responses=_NOT_FOUND)
async def get_organization(name: str, call: Current) -> Organization:
    """One organization the caller belongs to (the admin token: any)."""
    view = await organizations.get_visible(call.session, call.state.callers, call.principal, name)
    return Organization.of(view)


@router.post(
    "/{name}/members",
    status_code=201,
    summary="Add a member",
    responses={
        403: documented_error(
            "The caller may not manage the members (owners and admins may; only owners may add"
            " an owner), or its token is read-only"
        ),
        404: documented_error(
            "No such organization (or the caller is not a member of it), or no such user"
        ),
        409: conflict("The user is a member already (whatever its role)"),
    },
)
async def add_member(name: str, body: MemberCreate, call: Current) -> Member:
    """Add a user to the organization with a role (``member`` unless given)."""
    username, role = await organizations.add_member(
        call.work, call.state.callers, call.principal, name, body
    )
    return Member(username=username, role=role)  # type: ignore[arg-type]


_MEMBER_ERRORS: dict[int | str, dict[str, Any]] = {
    403: documented_error(
        "The caller may not manage the members (owners and admins may; only owners may make,"
        " demote or remove an owner), or its token is read-only"
    ),
    404: documented_error(
        "No such organization (or the caller is not a member of it), or the user is not a member"
    ),
    409: conflict("The organization would be left without an owner"),
}


@router.patch(
    "/{name}/members/{username}",
    summary="Change a member's role",
    responses=_MEMBER_ERRORS,
)
async def set_role(name: str, username: str, body: MemberUpdate, call: Current) -> Member:
    """Give a member another role."""
    username, role = await organizations.set_role(
        call.work, call.state.callers, call.principal, name, username, body
    )
    return Member(username=username, role=role)  # type: ignore[arg-type]


@router.delete(
    "/{name}/members/{username}",
    status_code=204,
    summary="Remove a member",
    responses=_MEMBER_ERRORS,
)
async def remove_member(name: str, username: str, call: Current) -> Response:
    """Remove a member from the organization."""
    await organizations.remove_member(call.work, call.state.callers, call.principal, name, username)
    return Response(status_code=204)
