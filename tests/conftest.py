"""Fixtures every test shares: the anyio backend, blockbuster, and one real server per session."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

import aiosdk

if TYPE_CHECKING:
    from aiosdk.server import ServerThread

pytest_plugins = ["anyio", "pytester"]

POSTGRES_URL_ENV = "AIOSDK_TEST_DATABASE_URL"
LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def pytest_configure(config: pytest.Config) -> None:
    """Run the PostgreSQL cases against a local trust-auth PostgreSQL when one answers, so that
    the README's test command and CI run the same tests; ``AIOSDK_TEST_DATABASE_URL`` picks
    another server, and ``AIOSDK_TEST_DATABASE_URL=`` (empty) turns them off."""
    if POSTGRES_URL_ENV not in os.environ and _answers(LOCAL_POSTGRES):
        os.environ[POSTGRES_URL_ENV] = LOCAL_POSTGRES
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell without job control starts a background command with SIGINT ignored, and
        # its children inherit that: the Ctrl-C tests' processes would never see theirs. A
        # handler (unlike SIG_IGN) is reset to the default in every child pytest starts.
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


TOKEN_SHAPED = re.compile(r"aio_[A-Za-z0-9_-]{16,}")
"""What every token the server issues looks like (see aiosdk.server.auth.TOKEN_PREFIX)."""


class _LeakRecorder(logging.Handler):
    """Keeps every log line, of any logger and level, that shows something token-shaped."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)  # the message, and the traceback if there is one
        if TOKEN_SHAPED.search(text):
            self.leaks.append(text)


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line() -> Iterator[None]:
    """Fail the session if any log line, the SDK's at DEBUG included, showed a token."""
    recorder = _LeakRecorder()
    sdk = logging.getLogger("aiosdk")
    level = sdk.level
    sdk.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(recorder)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(recorder)
        sdk.setLevel(level)
    assert not recorder.leaks, "log lines showed a token:\n" + "\n".join(recorder.leaks[:5])


@pytest.fixture
def anyio_backend() -> str:
    """asyncio unless a module asks for more (HTTP-only modules also run on trio)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test in which something blocks an event loop (ours, the server's, the facade's)."""
    with blockbuster_ctx() as bb:
        yield bb


# The session's server and its admin clients come from aiosdk's own pytest plugin
# (aiosdk.testing.plugin, loaded by its entry point): the suite uses what it ships.


@pytest.fixture(scope="session")
def server(aiosdk_server: ServerThread) -> ServerThread:
    """The reference server, in its own thread on free loopback ports, for the whole session."""
    return aiosdk_server


@pytest.fixture
def client(aiosdk_admin: aiosdk.AsyncClient) -> aiosdk.AsyncClient:
    """An async client of the session's server holding the admin token, closed after the test."""
    return aiosdk_admin


@pytest.fixture
def sync_client(aiosdk_admin_sync: aiosdk.Client) -> aiosdk.Client:
    """A blocking client of the session's server holding the admin token, closed after the test."""
    return aiosdk_admin_sync
