"""Fixtures every test shares: the anyio backend, blockbuster, and one real server per session."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

import aiosdk

pytest_plugins = ["anyio"]

POSTGRES_URL_ENV = "AIOSDK_TEST_DATABASE_URL"
LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def pytest_configure(config: pytest.Config) -> None:
    """Run the PostgreSQL cases against a local trust-auth PostgreSQL when one answers, so that
    the README's test command and CI run the same tests; ``AIOSDK_TEST_DATABASE_URL`` picks
    another server, and ``AIOSDK_TEST_DATABASE_URL=`` (empty) turns them off."""
    if POSTGRES_URL_ENV not in os.environ and _answers(LOCAL_POSTGRES):
        os.environ[POSTGRES_URL_ENV] = LOCAL_POSTGRES


def _answers(url: str) -> bool:
    """Whether ``url``'s PostgreSQL lets us in (outside any event loop: pytest is configuring)."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def connect() -> None:
        connection = await asyncpg.connect(dsn, timeout=2)
        await connection.close()

    try:
        asyncio.run(connect())
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
        return False
    return True


@pytest.fixture
def anyio_backend() -> str:
    """asyncio unless a module asks for more (HTTP-only modules also run on trio)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test in which something blocks an event loop (ours, the server's, the facade's)."""
    with blockbuster_ctx() as bb:
        yield bb


@pytest.fixture(scope="session")
def server() -> Iterator[object]:
    """The reference server, in its own thread on free loopback ports, for the whole session."""
    from aiosdk.server import ServerConfig, ServerThread

    thread = ServerThread(ServerConfig(database_url=os.environ.get("AIOSDK_TEST_SERVER_DB")))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
async def client(server: object) -> AsyncIterator[aiosdk.AsyncClient]:
    """An async client of the session's server, closed after the test."""
    async with aiosdk.AsyncClient(server.http_url, token=server.admin_token) as c:  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def sync_client(server: object) -> Iterator[aiosdk.Client]:
    """A blocking client of the session's server, closed after the test."""
    with aiosdk.Client(server.http_url, token=server.admin_token) as c:  # type: ignore[attr-defined]
        yield c
