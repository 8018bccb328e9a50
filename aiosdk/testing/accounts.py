"""Users and organizations made for one test, on a shared server (see :mod:`.plugin`)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .._client import AsyncClient
from .._core.secrets import Secret
from ..accounts.organizations import Role

__all__ = ["AsyncAccounts", "TestUser"]

_NAME_LENGTH = 64


@dataclass(frozen=True)
class TestUser:
    """A user made for a test: log in with :meth:`AsyncAccounts.client`."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    username: str
    password: Secret = field(repr=False)


class AsyncAccounts:
    """Makes users and organizations with fresh names, and clients logged in as those users.

    Leaving the ``async with`` block closes the clients it made and disables the users, so that
    their sessions and tokens stop working; names are never reused, so a later test never sees
    what an earlier one made.
    """

    def __init__(self, admin: AsyncClient, *, prefix: str = "t") -> None:
        self._admin = admin
        self._prefix = prefix
        self._users: list[str] = []
        self._clients: list[AsyncClient] = []

    async def __aenter__(self) -> AsyncAccounts:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the clients made here and disable the users made here."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()
        users, self._users = self._users, []
        for username in users:
            await self._admin.admin.disable_user(username)

    def name(self, hint: str = "") -> str:
        """A name no other test uses: the test's prefix, ``hint`` and a random part."""
        suffix = secrets.token_hex(4)
        start = "-".join(part for part in (self._prefix, hint) if part)
        return f"{start[: _NAME_LENGTH - len(suffix) - 1].rstrip('-_')}-{suffix}"

    async def user(self, hint: str = "user", *, email: str | None = None) -> TestUser:
        """A new user with a random password."""
        username = self.name(hint)
        password = secrets.token_urlsafe(16)
        await self._admin.admin.create_user(username, password=password, email=email)
        self._users.append(username)
        return TestUser(username, Secret(password))

    async def organization(
        self,
        hint: str = "org",
        *,
        owner: TestUser,
        members: Mapping[TestUser, Role] | None = None,
    ) -> str:
        """A new organization owned by ``owner``, with ``members`` in the given roles; its name."""
        name = self.name(hint)
        await self._admin.admin.create_organization(name, owner=owner.username)
        for member, role in (members or {}).items():
            await self._admin.admin.add_member(name, member.username, role=role)
        return name

    async def client(self, user: TestUser, **options: Any) -> AsyncClient:
        """A client of the same server logged in as ``user`` (a session), closed with this
        factory; ``options`` are :class:`~aiosdk.AsyncClient`'s."""
        client = AsyncClient(self._admin.url, **options)
        self._clients.append(client)
        await client.login(username=user.username, password=user.password.reveal())
        return client
