"""Fixtures of the fault tests: the scripted HTTP server, a refusing port, the retry log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from ._loop_thread import free_port
from .scripted import ScriptedServer


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    """A scripted HTTP server on a free loopback port (answers 200 until scripted otherwise)."""
    server = ScriptedServer().start()
    yield server
    server.stop()


@pytest.fixture
def not_listening() -> Iterator[ScriptedServer]:
    """A scripted server whose port refuses connections until ``.listen()`` is called."""
    server = ScriptedServer(listening=False).start()
    yield server
    server.stop()


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


class RetryLog(logging.Handler):
    """Collects the SDK's "retry N of M" log records; can run a callback on the first one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.retries: list[logging.LogRecord] = []
        self.on_first_retry: Callable[[], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if "; retry " not in record.getMessage():
            return
        self.retries.append(record)
        if len(self.retries) == 1 and self.on_first_retry is not None:
            self.on_first_retry()


@pytest.fixture
def retry_log() -> Iterator[RetryLog]:
    """The retries the SDK logs (logger ``aiosdk``, level INFO) during the test."""
    logger = logging.getLogger("aiosdk")
    handler = RetryLog()
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous)
