"""Organizations and their members: the rules behind ``/api/v1/organizations`` and
``/api/v1/admin/organizations``.

Who may see an organization (its members, and the admin token), who may change its members
(owners and admins, and the admin token; owners only where an owner is concerned: making one,
demoting or removing one), and the invariant that an organization always keeps an owner. Every
decision about what a caller may do goes through :mod:`..authorization`.

Writes go through the request's unit of work, which commits them before the answer is sent.
Membership changes lock the organization's row (on PostgreSQL; SQLite serializes writers) and
count the owners after the change, so that two concurrent demotions cannot leave none. For the
same reason they check the caller's role as the database has it once the row is locked, not as
:class:`~..authorization.Callers` cached it. Every change of what a user may do is announced
with :meth:`~..authorization.Callers.changed`, so that no server keeps serving the old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..auth import Principal
from ..authorization import (
    ADMIN,
    ALL_ACTIONS,
    NO_ACTIONS,
    READ,
    ROLE_ACTIONS,
    Callers,
    caller_of,
    cap,
    require,
)
from ..catalog.nodes import create_namespace_root
from ..errors import ConflictError, NotFoundError, PermissionDeniedError
from ..paging import Position, keyset_page
from ..storage import utcnow
from ..unit_of_work import UnitOfWork
from .models import Membership, NamespaceKind, Organization, Role, User
from .namespaces import Name, claim_namespace
from .users import DisplayName, get_user

__all__ = [
    "MemberCreate",
    "MemberUpdate",
    "OrganizationCreate",
    "OrganizationView",
    "RoleName",
    "Username",
    "add_member",
    "create_organization",
    "get_visible",
    "list_visible",
    "remove_member",
    "set_role",
]

RoleName = Literal["owner", "admin", "member", "read_only"]
"""A role in an organization, as a request field (see :class:`~.models.Role`)."""

Username = Annotated[
    str, Field(min_length=1, max_length=64, strict=True, description="An existing user.")
]
"""An existing user's name, as a request field."""


class OrganizationCreate(BaseModel):
    """A new organization; its ``owner`` (an existing user) becomes its first member."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    owner: Username
    display_name: DisplayName | None = None


class MemberCreate(BaseModel):
    """A user to add to an organization, with a role (only an owner may add an owner)."""

    model_config = ConfigDict(extra="forbid")

    username: Username
    role: RoleName = "member"


class MemberUpdate(BaseModel):
    """A member's new role (only an owner may make or demote an owner)."""

    model_config = ConfigDict(extra="forbid")

    role: RoleName


@dataclass(frozen=True)
class OrganizationView:
    """An organization as one caller sees it."""

    organization: Organization
    role: str | None
    """The caller's role; ``None`` for the admin token."""
    allowed_actions: frozenset[str]
    """What the caller may do in the organization's namespace (its token's scope applied)."""
    members: list[tuple[str, str]]
    """``(username, role)`` of every member, by username."""


def _not_found(name: str) -> str:
    return f"Organization {name!r} not found"


async def _find(session: AsyncSession, name: str, *, for_update: bool = False) -> Organization:
    query = select(Organization).where(Organization.name == name)
    if for_update:
        query = query.with_for_update()
    organization = await session.scalar(query)
    if organization is None:
        raise NotFoundError(_not_found(name))
    return organization


async def _members(
    session: AsyncSession, organization_ids: list[str]
) -> dict[str, list[tuple[str, str]]]:
    members: dict[str, list[tuple[str, str]]] = {id_: [] for id_ in organization_ids}
    if not organization_ids:
        return members
    rows = await session.execute(
        select(Membership.organization_id, User.username, Membership.role)
        .join(User, User.id == Membership.user_id)
        .where(Membership.organization_id.in_(organization_ids))
        .order_by(User.username)
    )
    for organization_id, username, role in rows:
        members[organization_id].append((username, role))
    return members


def _view(
    principal: Principal, organization: Organization, members: list[tuple[str, str]]
) -> OrganizationView:
    role = None if principal.is_admin else dict(members).get(principal.name)
    granted = ALL_ACTIONS if principal.is_admin else ROLE_ACTIONS.get(role or "", NO_ACTIONS)
    return OrganizationView(organization, role, cap(principal, granted), members)


async def get_visible(
    session: AsyncSession, callers: Callers, principal: Principal, name: str
) -> OrganizationView:
    """The organization ``name`` if ``principal`` may see it (a member, or the admin token);
    :class:`NotFoundError` otherwise, the same as for one that does not exist. What the caller
    may do there is what ``callers`` authorized it for."""
    organization = await _find(session, name)
    caller = await callers.caller(session, principal)
    actions = require(caller, name, READ, not_found=_not_found(name))
    members = (await _members(session, [organization.id]))[organization.id]
    role = None if principal.is_admin else dict(members).get(principal.name)
    return OrganizationView(organization, role, actions, members)


async def list_visible(
    session: AsyncSession, principal: Principal, page_size: int, after: Position | None
) -> tuple[list[OrganizationView], Position | None]:
    """A page of the organizations ``principal`` belongs to (every one for the admin token),
    oldest first."""
    query = select(Organization)
    if not principal.is_admin:
        query = (
            query.join(Membership, Membership.organization_id == Organization.id)
            .join(User, User.id == Membership.user_id)
            .where(User.username == principal.name, User.disabled_at.is_(None))
        )
    found, next_position = await keyset_page(session, query, Organization, page_size, after)
    members = await _members(session, [organization.id for organization in found])
    views = [_view(principal, o, members[o.id]) for o in found]
    return views, next_position


async def create_organization(
    work: UnitOfWork, callers: Callers, request: OrganizationCreate
) -> OrganizationView:
    """Create an organization, its namespace (with the namespace's catalog root node), and its
    owner's membership (as the admin token: the caller checks). :class:`NotFoundError` if the
    owner is no user, :class:`ConflictError` if the name is taken or reserved."""
    session = work.session
    owner = await get_user(session, request.owner)
    callers.changed(work, owner.username)
    await claim_namespace(session, request.name, NamespaceKind.ORGANIZATION)
    now = utcnow()
    organization = Organization(
        name=request.name, display_name=request.display_name, created_at=now
    )
    session.add(organization)
    await session.flush()
    session.add(
        Membership(
            organization_id=organization.id, user_id=owner.id, role=Role.OWNER, created_at=now
        )
    )
    await session.flush()
    await create_namespace_root(session, request.name)
    return OrganizationView(organization, None, ALL_ACTIONS, [(owner.username, Role.OWNER)])


async def _managed(session: AsyncSession, principal: Principal, name: str) -> Organization:
    """The organization ``name``, locked, if ``principal`` may manage its members (as the
    database has it now: a role just taken away must not manage, even for the moment its
    announcement takes to arrive)."""
    organization = await _find(session, name, for_update=True)
    require(await caller_of(session, principal), name, ADMIN, not_found=_not_found(name))
    return organization


async def _check_owner_change(
    session: AsyncSession, principal: Principal, organization: Organization
) -> None:
    """Only an owner (or the admin token) may make, demote or remove an owner."""
    if principal.is_admin:
        return
    role = await session.scalar(
        select(Membership.role)
        .join(User, User.id == Membership.user_id)
        .where(Membership.organization_id == organization.id, User.username == principal.name)
    )
    if role != Role.OWNER:
        raise PermissionDeniedError(
            f"Only an owner of {organization.name!r} may make, demote or remove an owner"
        )


async def _keeps_an_owner(session: AsyncSession, organization: Organization) -> None:
    """Refuse (409) a change that left ``organization`` without an owner; run after it."""
    owners = await session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.organization_id == organization.id, Membership.role == Role.OWNER)
    )
    if not owners:
        raise ConflictError(f"{organization.name!r} must keep at least one owner")


async def _membership(
    session: AsyncSession, organization: Organization, username: str
) -> Membership:
    membership = await session.scalar(
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.organization_id == organization.id, User.username == username)
    )
    if membership is None:
        raise NotFoundError(f"{username!r} is not a member of {organization.name!r}")
    return membership


async def add_member(
    work: UnitOfWork, callers: Callers, principal: Principal, name: str, request: MemberCreate
) -> tuple[str, str]:
    """Add a user to the organization ``name``; returns ``(username, role)``.

    The caller needs :data:`~..authorization.ADMIN` on it; :class:`NotFoundError` for an
    unknown organization or user, :class:`ConflictError` if the user is a member already
    (whatever its role: changing it is :func:`set_role`).
    """
    session = work.session
    organization = await _managed(session, principal, name)
    if request.role == Role.OWNER:
        await _check_owner_change(session, principal, organization)
    user = await get_user(session, request.username)
    existing = await session.scalar(
        select(Membership.role).where(
            Membership.organization_id == organization.id, Membership.user_id == user.id
        )
    )
    if existing is not None:
        raise ConflictError(f"{user.username!r} is already a member of {name!r} ({existing})")
    callers.changed(work, user.username)
    session.add(
        Membership(
            organization_id=organization.id, user_id=user.id, role=request.role, created_at=utcnow()
        )
    )
    username = user.username  # the failed flush below would expire it
    try:
        await session.flush()
    except IntegrityError:  # added by a concurrent request meanwhile
        raise ConflictError(f"{username!r} is already a member of {name!r}") from None
    return username, request.role


async def set_role(
    work: UnitOfWork,
    callers: Callers,
    principal: Principal,
    name: str,
    username: str,
    request: MemberUpdate,
) -> tuple[str, str]:
    """Change a member's role; returns ``(username, role)``.

    The caller needs :data:`~..authorization.ADMIN` on the organization, and to be an owner
    where an owner is made or demoted; :class:`ConflictError` if that would leave no owner.
    """
    session = work.session
    organization = await _managed(session, principal, name)
    membership = await _membership(session, organization, username)
    if membership.role != request.role:
        was_owner = membership.role == Role.OWNER
        if was_owner or request.role == Role.OWNER:
            await _check_owner_change(session, principal, organization)
        callers.changed(work, username)
        membership.role = request.role
        await session.flush()
        if was_owner:
            await _keeps_an_owner(session, organization)
    return username, membership.role


async def remove_member(
    work: UnitOfWork, callers: Callers, principal: Principal, name: str, username: str
) -> None:
    """Remove a member from the organization ``name``.

    The caller needs :data:`~..authorization.ADMIN` on it, and to be an owner to remove an
    owner; any member may leave (remove itself). :class:`ConflictError` if that would leave no
    owner.
    """
    session = work.session
    if username == principal.name:  # leaving: a member needs no more than to be one
        organization = await _find(session, name, for_update=True)
        require(await caller_of(session, principal), name, READ, not_found=_not_found(name))
    else:
        organization = await _managed(session, principal, name)
    membership = await _membership(session, organization, username)
    was_owner = membership.role == Role.OWNER
    if was_owner:
        await _check_owner_change(session, principal, organization)
    callers.changed(work, username)
    await session.delete(membership)
    await session.flush()
    if was_owner:
        await _keeps_an_owner(session, organization)
