"""The pytest plugin for suites that test code built on aiosdk.

Registered by entry point, so installing aiosdk (with the ``server`` extra) makes its fixtures
available; none of them does anything until a test asks for it (``-p no:aiosdk`` unloads it):

``aiosdk_server``
    one reference server for the whole test session, in its own thread on free loopback ports,
    with a temporary data directory (``--aiosdk-database URL`` puts its tables elsewhere). It is
    an :class:`aiosdk.server.ServerThread`: ``http_url``, ``grpc_host``, ``grpc_port`` and
    ``admin_token`` tell a client where to go.
``aiosdk_admin`` / ``aiosdk_admin_sync``
    an :class:`aiosdk.AsyncClient` / :class:`aiosdk.Client` holding the admin token, closed after
    the test.
``aiosdk_accounts`` / ``aiosdk_accounts_sync``
    a factory of users and organizations with their own logged-in clients. Names are fresh in
    every test, so each test starts from clean namespaces on the shared server; the users a test
    made are disabled after it (their sessions and tokens stop working).

The async fixtures need an async test runner: anyio's pytest plugin (mark the test
``@pytest.mark.anyio``) or pytest-asyncio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import aiosdk
    from aiosdk.server import ServerThread

    from .._sync.testing import Accounts
    from .accounts import AsyncAccounts

__all__ = [
    "aiosdk_accounts",
    "aiosdk_accounts_sync",
    "aiosdk_admin",
    "aiosdk_admin_sync",
    "aiosdk_server",
    "pytest_addoption",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--aiosdk-database``: the database of the session's server (default: SQLite)."""
    parser.getgroup("aiosdk").addoption(
        "--aiosdk-database",
        metavar="URL",
        default=None,
        help="SQLAlchemy async URL of the aiosdk_server fixture's database (default: SQLite in"
        " a temporary directory)",
    )


@pytest.fixture(scope="session")
def aiosdk_server(pytestconfig: pytest.Config) -> Iterator[ServerThread]:
    """A reference server for the whole session, on free loopback ports."""
    from aiosdk.server import ServerConfig, ServerThread

    database_url = pytestconfig.getoption("aiosdk_database")
    with ServerThread(ServerConfig(database_url=database_url)) as thread:
        yield thread


@pytest.fixture
async def aiosdk_admin(aiosdk_server: ServerThread) -> AsyncIterator[aiosdk.AsyncClient]:
    """An async client holding the admin token of :func:`aiosdk_server`."""
    import aiosdk

    async with aiosdk.AsyncClient(
        aiosdk_server.http_url, token=aiosdk_server.admin_token
    ) as client:
        yield client


@pytest.fixture
def aiosdk_admin_sync(aiosdk_server: ServerThread) -> Iterator[aiosdk.Client]:
    """A blocking client holding the admin token of :func:`aiosdk_server`."""
    import aiosdk

    with aiosdk.Client(aiosdk_server.http_url, token=aiosdk_server.admin_token) as client:
        yield client


@pytest.fixture
async def aiosdk_accounts(
    aiosdk_admin: aiosdk.AsyncClient, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncAccounts]:
    """Make users and organizations, each user with a logged-in :class:`aiosdk.AsyncClient`."""
    from .accounts import AsyncAccounts

    async with AsyncAccounts(aiosdk_admin, prefix=_prefix(request)) as accounts:
        yield accounts


@pytest.fixture
def aiosdk_accounts_sync(
    aiosdk_admin_sync: aiosdk.Client, request: pytest.FixtureRequest
) -> Iterator[Accounts]:
    """Make users and organizations, each user with a logged-in blocking :class:`aiosdk.Client`."""
    from .._sync.testing import Accounts

    with Accounts(aiosdk_admin_sync, prefix=_prefix(request)) as accounts:
        yield accounts


def _prefix(request: pytest.FixtureRequest) -> str:
    """A readable start for the names a test makes (the factory adds a random part)."""
    name = request.node.name.split("[")[0].lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in name.removeprefix("test_"))
    return cleaned.strip("-")[:24].strip("-") or "t"
