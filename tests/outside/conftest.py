"""Fixtures of the outside tests: a server in a thread for the module (a module that needs
another one has a ``server`` fixture of its own), its admin over plain httpx, and the errors the
server logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from aiosdk.server import ServerConfig, ServerThread
from aiosdk.server.config import AccountSettings
from outside._tools import Unhandled, admin_client


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """Failed logins lock accounts as usual, but not the tests' one address."""
    config = ServerConfig(accounts=AccountSettings(login_failures_per_address=1_000_000))
    with ServerThread(config) as thread:
        yield thread


@pytest.fixture(scope="module")
def admin(server: ServerThread) -> Iterator[httpx.Client]:
    """The server's admin, on ``/api/v1``."""
    with admin_client(server) as http:
        yield http


@pytest.fixture
def unhandled() -> Iterator[Unhandled]:
    """What the server logs as errors during the test."""
    logger = logging.getLogger("aiosdk.server")
    handler = Unhandled()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
