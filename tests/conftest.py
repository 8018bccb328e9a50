"""Fixtures every test shares: the anyio backend, blockbuster, and one real server per session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

import aiosdk

pytest_plugins = ["anyio"]


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
