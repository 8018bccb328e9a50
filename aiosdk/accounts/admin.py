"""Administration: users and organizations (the admin token), and organization members.

``create_user``, ``users``, ``get_user``, ``update_user``, ``disable_user``, ``enable_user`` and
``create_organization`` need the admin token (else :class:`~aiosdk.PermissionDeniedError`).
The member calls (``add_member``, ``set_role``, ``remove_member``) also work for an
organization's owners and admins.
"""

from __future__ import annotations

from typing import Any

from .._core.context import ClientContext
from .._core.options import NOT_GIVEN, NotGiven
from .._core.paging import AsyncPager, Page
from .._core.paths import segment
from .._core.secrets import Secret
from .organizations import Member, Organization, Role
from .users import User

__all__ = ["AsyncAdmin"]


def _user_page(data: dict[str, Any]) -> Page[User]:
    items = [User._from_json(item) for item in data["items"]]
    return Page(items=items, next_page_token=data.get("next_page_token"))


def _user_path(username: str) -> str:
    return f"/admin/users/{segment(username, what='username')}"


def _members_path(organization: str) -> str:
    return f"/organizations/{segment(organization, what='organization name')}/members"


def _password(password: str | Secret | None) -> str | None:
    return password.reveal() if isinstance(password, Secret) else password


class AsyncAdmin:
    """Users, organizations and members; see the module's description for who may call what."""

    def __init__(self, ctx: ClientContext) -> None:
        self._ctx = ctx

    # -- users -------------------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        *,
        password: str | Secret | None = None,
        email: str | None = None,
        display_name: str | None = None,
    ) -> User:
        """Create a user (and its namespace); without a password it can use API tokens only.

        A taken or reserved name is a :class:`~aiosdk.ConflictError`; a password needs 8 to
        1024 characters.
        """
        body = {
            "username": username,
            "password": _password(password),
            "email": email,
            "display_name": display_name,
        }
        return await self._ctx.fetch("POST", "/admin/users", User._from_json, json=body)

    async def get_user(self, username: str) -> User:
        """One user; :class:`~aiosdk.NotFoundError` if there is none."""
        return await self._ctx.fetch("GET", _user_path(username), User._from_json)

    def users(self, *, page_size: int = 100) -> AsyncPager[User]:
        """Every user, disabled ones included, oldest first, ``page_size`` per request."""

        async def fetch(cursor: str | None) -> Page[User]:
            params: dict[str, Any] = {"page_size": page_size}
            if cursor:
                params["page_token"] = cursor
            return await self._ctx.fetch("GET", "/admin/users", _user_page, params=params)

        return AsyncPager(fetch)

    async def update_user(
        self,
        username: str,
        *,
        email: str | NotGiven | None = NOT_GIVEN,
        display_name: str | NotGiven | None = NOT_GIVEN,
        password: str | Secret | NotGiven | None = NOT_GIVEN,
        disabled: bool | NotGiven = NOT_GIVEN,
    ) -> User:
        """Change what is given (``None`` clears ``email``, ``display_name`` or ``password``).

        Disabling revokes the user's API tokens and login sessions at once; enabling lets the
        user log in again but brings none of them back.
        """
        body: dict[str, Any] = {}
        if not isinstance(email, NotGiven):
            body["email"] = email
        if not isinstance(display_name, NotGiven):
            body["display_name"] = display_name
        if not isinstance(password, NotGiven):
            body["password"] = _password(password)
        if not isinstance(disabled, NotGiven):
            body["disabled"] = disabled
        return await self._ctx.fetch("PATCH", _user_path(username), User._from_json, json=body)

    async def disable_user(self, username: str) -> User:
        """Disable a user: its API tokens and sessions stop working at once."""
        return await self.update_user(username, disabled=True)

    async def enable_user(self, username: str) -> User:
        """Let a disabled user log in again (its old tokens and sessions stay revoked)."""
        return await self.update_user(username, disabled=False)

    # -- organizations -----------------------------------------------------------------------

    async def create_organization(
        self, name: str, *, owner: str, display_name: str | None = None
    ) -> Organization:
        """Create an organization (and its namespace) with ``owner`` as its first owner."""
        body = {"name": name, "owner": owner, "display_name": display_name}
        return await self._ctx.fetch(
            "POST", "/admin/organizations", Organization._from_json, json=body
        )

    async def add_member(
        self, organization: str, username: str, *, role: Role = "member"
    ) -> Member:
        """Add ``username`` to ``organization`` as ``role``; a member already is a
        :class:`~aiosdk.ConflictError` (change roles with :meth:`set_role`)."""
        body = {"username": username, "role": role}
        return await self._ctx.fetch(
            "POST", _members_path(organization), Member._from_json, json=body
        )

    async def set_role(self, organization: str, username: str, role: Role) -> Member:
        """Give a member another role (only owners make or demote owners; an organization
        keeps at least one owner)."""
        path = f"{_members_path(organization)}/{segment(username, what='username')}"
        return await self._ctx.fetch("PATCH", path, Member._from_json, json={"role": role})

    async def remove_member(self, organization: str, username: str) -> None:
        """Remove a member from ``organization`` (not its last owner)."""
        path = f"{_members_path(organization)}/{segment(username, what='username')}"
        await self._ctx.request("DELETE", path)
