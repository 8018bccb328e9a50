"""Servers whose engine's statements are counted (a ``before_cursor_execute`` listener), for the
tests of the caches: the module's server made one (the :func:`observed` and :func:`server`
fixtures, imported by the modules that use them), a second server of the same PostgreSQL
database, and what it takes to wait for notifications or to lose them."""

from __future__ import annotations

import collections
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from aiosdk.server import Server, ServerConfig, runner
from aiosdk.server.notify import Notifier
from aiosdk.server.storage import create_engine

SOON = 5.0
"""How long a notification may take to reach another process: far below the caches' minute, so
that an entry that is never dropped fails the test."""

T = TypeVar("T")


async def until(look: Callable[[], Awaitable[T]], expected: T) -> None:
    """Look again and again, for :data:`SOON` at most, until ``look()`` gives ``expected``."""
    for _ in range(int(SOON / 0.01)):
        if await look() == expected:
            return
        await anyio.sleep(0.01)
    assert await look() == expected


class Statements:
    """The statements an engine sends, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    @property
    def count(self) -> int:
        return len(self.sent)

    def listen(self, engine: AsyncEngine) -> None:
        def sent(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
            self.sent.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", sent)


SETTLED = "test_settled"
"""A channel of the tests' own: its markers tell when earlier messages have all been heard."""


class HeardNotifier(Notifier):
    """The server's notifier, also counting the markers it hears on :data:`SETTLED`."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.heard: collections.Counter[str] = collections.Counter()
        self.subscribe(SETTLED, lambda marker: self.heard.update([marker]))


@dataclass
class Observed:
    """A running server, the statements its engine has sent, and that engine and notifier."""

    server: Server
    statements: Statements
    engine: AsyncEngine
    notifier: HeardNotifier

    async def settle(self) -> None:
        """Wait until the server has heard every message committed so far. On PostgreSQL it
        hears its own once more, a moment after it answered (which empties its cache again):
        a marker committed now reaches it after them (messages come in commit order)."""
        if self.engine.dialect.name != "postgresql":
            return  # SQLite: every message is heard when its transaction commits
        marker = uuid.uuid4().hex
        async with self.engine.begin() as connection:
            notify = text("SELECT pg_notify(:channel, :marker)")
            await connection.execute(notify, {"channel": f"aiosdk_{SETTLED}", "marker": marker})

        async def times() -> int:
            return self.notifier.heard[marker]

        await until(times, 1)


@asynccontextmanager
async def observed_server(config: ServerConfig) -> AsyncIterator[Observed]:
    """A server whose engine's statements are counted."""
    statements = Statements()
    made: dict[str, Any] = {}

    def counting_engine(database_url: str) -> AsyncEngine:
        engine = made["engine"] = create_engine(database_url)
        statements.listen(engine)
        return engine

    def heard_notifier(engine: AsyncEngine) -> HeardNotifier:
        notifier = made["notifier"] = HeardNotifier(engine)
        return notifier

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "create_engine", counting_engine)
        patch.setattr(runner, "Notifier", heard_notifier)
        server = Server(config)
        await server.start()
    try:
        yield Observed(server, statements, made["engine"], made["notifier"])
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def observed(
    database_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observed]:
    """The module's server, observed."""
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("data"), database_url=database_url)
    async with observed_server(config) as running:
        yield running


@pytest.fixture(scope="module")
def server(observed: Observed) -> Server:
    """The module's server (the fixtures of conftest use this one): its statements counted."""
    return observed.server


@pytest.fixture
async def second_server(
    server: Server, database_url: str | None, tmp_path: Path
) -> AsyncIterator[Server]:
    """Another server process's stand-in: the same PostgreSQL database, caches of its own."""
    if database_url is None:
        pytest.skip("one SQLite database is served by one server process")
    config = ServerConfig(
        data_dir=tmp_path, database_url=database_url, admin_token=server.admin_token
    )
    async with Server(config) as other:
        yield other


async def terminate_listeners(url: str) -> int:
    """Kill the connections listening for notifications on the database of ``url``."""
    engine = await anyio.to_thread.run_sync(create_engine, url)
    try:
        async with engine.connect() as connection:
            terminated = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND query LIKE 'LISTEN %'"
                )
            )
    finally:
        await engine.dispose()
    return int(terminated or 0)
