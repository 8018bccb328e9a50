"""Users: creating, finding, listing, updating and disabling them (``/api/v1/admin/users``),
and the calling user's profile (``/api/v1/user``).

Writes go through the request's unit of work, which commits them before the answer is sent.
Disabling a user revokes every credential it has at once: its API tokens and its login sessions
(with their access tokens) stop authenticating when the request commits, on every server process.
Creating, disabling, enabling or updating a user announces that what it may do changed (see
:class:`~..authorization.Callers`), so that no server keeps what it cached of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..auth import Principal
from ..authenticator import Authenticator
from ..authorization import Callers
from ..catalog.nodes import create_namespace_root
from ..errors import NotFoundError
from ..paging import Position, keyset_page
from ..storage import Token, utcnow
from ..unit_of_work import UnitOfWork
from ..validation import Text
from .models import Membership, NamespaceKind, Organization, User
from .namespaces import Name, claim_namespace
from .passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password
from .sessions import revoke_user_sessions

__all__ = [
    "DisplayName",
    "Email",
    "OrganizationRole",
    "Password",
    "UserCreate",
    "UserUpdate",
    "create_user",
    "find_user",
    "get_user",
    "list_users",
    "memberships_of",
    "revoke_credentials",
    "update_user",
    "user_of",
]

Password = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        strict=True,
        description=f"{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
    ),
]
"""A new password, as a request field (never logged, never answered)."""

Email = Annotated[
    Text,
    Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$", strict=True),
]
"""An e-mail address, as a request field."""

DisplayName = Annotated[Text, Field(min_length=1, max_length=200, strict=True)]
"""A human-readable name, as a request field."""


class UserCreate(BaseModel):
    """A new user. Without a password the user cannot log in with one (API tokens only)."""

    model_config = ConfigDict(extra="forbid")

    username: Name
    password: Password | None = Field(default=None, repr=False)
    email: Email | None = None
    display_name: DisplayName | None = None


class UserUpdate(BaseModel):
    """Changes to a user: only the fields present change (``null`` clears ``email``,
    ``display_name`` and ``password``; a user without a password cannot log in with one).

    ``disabled: true`` revokes the user's API tokens and login sessions at once; ``false``
    lets the user log in again, but brings none of them back.
    """

    model_config = ConfigDict(extra="forbid")

    disabled: bool | None = Field(default=None, strict=True)
    email: Email | None = None
    display_name: DisplayName | None = None
    password: Password | None = Field(default=None, repr=False)


async def find_user(
    session: AsyncSession, username: str, *, for_update: bool = False
) -> User | None:
    """The user ``username`` (disabled or not), or ``None``; its row locked ``for_update``."""
    query = select(User).where(User.username == username)
    user: User | None = await session.scalar(query.with_for_update() if for_update else query)
    return user


async def get_user(session: AsyncSession, username: str, *, for_update: bool = False) -> User:
    """The user ``username`` (disabled or not); :class:`NotFoundError` if there is none."""
    user = await find_user(session, username, for_update=for_update)
    if user is None:
        raise NotFoundError(f"User {username!r} not found")
    return user


async def create_user(work: UnitOfWork, callers: Callers, request: UserCreate) -> User:
    """Create a user, its namespace and the namespace's catalog root node;
    :class:`~..errors.ConflictError` if the name is taken (by a user or an organization) or
    reserved. The password is hashed in a worker thread.

    A token may have been minted for the name before the user existed: what was cached of it
    (no namespace at all) is dropped."""
    # Hashed before the first statement: the request holds no connection (nor, on SQLite,
    # the write lock) while Argon2 runs.
    password_hash = None if request.password is None else await hash_password(request.password)
    session = work.session
    await claim_namespace(session, request.username, NamespaceKind.USER)
    callers.changed(work, request.username)
    user = User(
        username=request.username,
        email=request.email,
        display_name=request.display_name,
        password_hash=password_hash,
        created_at=utcnow(),
    )
    session.add(user)
    await session.flush()
    await create_namespace_root(session, request.username)
    return user


async def list_users(
    session: AsyncSession, page_size: int, after: Position | None
) -> tuple[list[User], Position | None]:
    """A page of every user, disabled ones included, oldest first."""
    return await keyset_page(session, select(User), User, page_size, after)


async def update_user(
    work: UnitOfWork,
    authenticator: Authenticator,
    callers: Callers,
    username: str,
    request: UserUpdate,
) -> User:
    """Apply ``request`` to the user ``username`` (see :class:`UserUpdate`)."""
    changes = request.model_fields_set
    # Hashed before the first statement (no connection held while Argon2 runs).
    new_hash = (
        await hash_password(request.password)
        if "password" in changes and request.password is not None
        else None
    )
    session = work.session
    # Locked: a login that checked the old password re-reads this row, under the same lock,
    # before its session commits, so no session opened with the old password survives.
    user = await get_user(session, username, for_update=True)
    # Disabled, it may do nothing anywhere; enabled again, what its memberships grant.
    callers.changed(work, user.username)
    if "email" in changes:
        user.email = request.email
    if "display_name" in changes:
        user.display_name = request.display_name
    if "password" in changes:
        user.password_hash = new_hash
    if request.disabled is True:
        if user.disabled_at is None:
            user.disabled_at = utcnow()
        # Even if already disabled: whatever credential it has left stops now.
        await revoke_credentials(work, authenticator, user, reason="user_disabled")
    else:
        if request.disabled is False:
            user.disabled_at = None
        if "password" in changes:
            # A new password is a reset (the old one may be known to someone else): the
            # sessions opened with it end, and Basic credentials checked with it stop at once.
            # API tokens stay: they were never the password.
            await revoke_user_sessions(work, authenticator, user.id, "password_changed")
            authenticator.user_changed(work, user.username)
    await session.flush()
    return user


async def revoke_credentials(
    work: UnitOfWork, authenticator: Authenticator, user: User, *, reason: str
) -> None:
    """Revoke every live login session of ``user`` (with their access tokens) and every live
    API token of it, in ``work``: they stop authenticating, everywhere, once it commits."""
    await revoke_user_sessions(work, authenticator, user.id, reason)
    session = work.session
    token_ids = list(
        await session.scalars(
            select(Token.id).where(Token.owner == user.username, Token.revoked_at.is_(None))
        )
    )
    if token_ids:
        await session.execute(
            update(Token).where(Token.id.in_(token_ids)).values(revoked_at=utcnow())
        )
        await session.flush()
    for token_id in token_ids:
        authenticator.revoked(work, token_id)
    authenticator.user_changed(work, user.username)


@dataclass(frozen=True)
class OrganizationRole:
    """An organization a user belongs to, and the user's role in it."""

    organization: Organization
    role: str


async def memberships_of(session: AsyncSession, user: User) -> list[OrganizationRole]:
    """The organizations ``user`` belongs to, by name, with its role in each."""
    rows = await session.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user.id)
        .order_by(Organization.name)
    )
    return [OrganizationRole(organization, role) for organization, role in rows]


async def user_of(session: AsyncSession, principal: Principal) -> User | None:
    """The enabled user ``principal`` is; ``None`` for the admin token, or a token whose owner
    is no user (or a disabled one)."""
    if principal.is_admin:
        return None
    user: User | None = await session.scalar(
        select(User).where(User.username == principal.name, User.disabled_at.is_(None))
    )
    return user
